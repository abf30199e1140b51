// Package enos is the EnOS device protocol as edged and ingestd speak it:
// secret-login signing, client ids and usernames, topics, and the JSON of
// measure point posts and replies, with edged's additions (gateway id,
// epoch, sequence) in "edged" fields a plain EnOS device simply does not
// send. It does no I/O: the gateway's MQTT client (cloudlink) and the
// ingest service (ingest) both build on it.
//
// Request: {"id":"1","version":"1.0","method":"thing.measurepoint.post","params":{...}}
// Reply, on the request's topic + "_reply": {"id":"1","code":200,"message":"","data":{}}
package enos

import "strings"

// Topic suffixes under /sys/{productKey}/{deviceKey}/.
const (
	SuffixPost                   = "thing/measurepoint/post"
	SuffixPostBatch              = "thing/measurepoint/post/batch"
	SuffixResume                 = "thing/measurepoint/resume"
	SuffixResumeBatch            = "thing/measurepoint/resume/batch"
	SuffixAttributeUpdate        = "thing/attribute/update"
	SuffixTopoAdd                = "thing/topo/add"
	SuffixTopoGet                = "thing/topo/get"
	SuffixTopoDelete             = "thing/topo/delete"
	SuffixTSLTemplateGet         = "thing/tsltemplate/get"
	SuffixServicePrefix          = "thing/service/"                 // + serviceId: commands down
	SuffixServiceMeasurepointSet = "thing/service/measurepoint/set" // set measure points down
)

// Topic suffixes under /ext/session/{gatewayProductKey}/{gatewayDeviceKey}/:
// a gateway logs its sub-devices in and out.
const (
	SuffixCombineLogin      = "combine/login"
	SuffixCombineLoginBatch = "combine/login/batch"
	SuffixCombineLogout     = "combine/logout"
)

// ReplySuffix is appended to a request's topic to get its reply topic.
const ReplySuffix = "_reply"

// Methods of the requests.
const (
	MethodPost         = "thing.measurepoint.post"
	MethodPostBatch    = "thing.measurepoint.post.batch"
	MethodResume       = "thing.measurepoint.resume"
	MethodResumeBatch  = "thing.measurepoint.resume.batch"
	MethodCombineLogin = "combine.login"
)

// SuffixEventPost is the suffix of an event post.
func SuffixEventPost(eventID string) string { return "thing/event/" + eventID + "/post" }

// Topic returns "/sys/{productKey}/{deviceKey}/{suffix}".
func Topic(productKey, deviceKey, suffix string) string {
	return "/sys/" + productKey + "/" + deviceKey + "/" + suffix
}

// SessionTopic returns "/ext/session/{productKey}/{deviceKey}/{suffix}".
func SessionTopic(productKey, deviceKey, suffix string) string {
	return "/ext/session/" + productKey + "/" + deviceKey + "/" + suffix
}

// ParseTopic splits "/sys/{productKey}/{deviceKey}/{suffix}"; ok is false
// for any other shape, an empty level, or an MQTT wildcard in the keys.
func ParseTopic(topic string) (productKey, deviceKey, suffix string, ok bool) {
	return parseTopic(topic, "/sys/")
}

// ParseSessionTopic splits "/ext/session/{productKey}/{deviceKey}/{suffix}".
func ParseSessionTopic(topic string) (productKey, deviceKey, suffix string, ok bool) {
	return parseTopic(topic, "/ext/session/")
}

func parseTopic(topic, prefix string) (pk, dk, suffix string, ok bool) {
	rest, found := strings.CutPrefix(topic, prefix)
	if !found {
		return "", "", "", false
	}
	pk, rest, found = strings.Cut(rest, "/")
	if !found {
		return "", "", "", false
	}
	dk, suffix, found = strings.Cut(rest, "/")
	if !found || !ValidKey(pk) || !ValidKey(dk) || suffix == "" {
		return "", "", "", false
	}
	return pk, dk, suffix, true
}
