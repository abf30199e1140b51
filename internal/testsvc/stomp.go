package testsvc

import (
	"time"

	"github.com/go-stomp/stomp/v3"
)

// StompSend sends one persistent text message with a plain go-stomp client,
// as a foreign application would.
func StompSend(addr, dest, body string) error {
	c, err := stomp.Dial("tcp", addr, stomp.ConnOpt.HeartBeat(time.Second, time.Second))
	if err != nil {
		return err
	}
	defer c.Disconnect()
	return c.Send(dest, "text/plain", []byte(body), stomp.SendOpt.Receipt, stomp.SendOpt.Header("persistent", "true"))
}
