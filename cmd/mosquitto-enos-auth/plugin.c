// The Mosquitto plugin entry points (plugin API version 5); they call the
// Go functions exported from main.go. In a file of their own: definitions
// in a cgo preamble would be compiled twice.
#include <stdlib.h>
#include <string.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include "_cgo_export.h"

static mosquitto_plugin_id_t *edged_plugin_id;

static int edged_basic_auth(int event, void *event_data, void *userdata) {
	struct mosquitto_evt_basic_auth *ed = event_data;
	return goBasicAuth(ed->client, ed->username, ed->password);
}

static char *edged_opt(struct mosquitto_opt *options, int n, const char *key) {
	for (int i = 0; i < n; i++) {
		if (options[i].key && strcmp(options[i].key, key) == 0) return options[i].value;
	}
	return NULL;
}

void edged_log(int level, const char *msg) {
	mosquitto_log_printf(level, "enos-auth: %s", msg);
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions) {
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options, int option_count) {
	edged_plugin_id = identifier;
	int rc = goInit(edged_opt(options, option_count, "registry"), edged_opt(options, option_count, "max_skew"));
	if (rc != MOSQ_ERR_SUCCESS) return rc;
	return mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, edged_basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count) {
	return mosquitto_callback_unregister(edged_plugin_id, MOSQ_EVT_BASIC_AUTH, edged_basic_auth, NULL);
}
