package ingest

import (
	"fmt"
	"net"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged/edged/cloudlink/enos"
)

func TestConnGuard(t *testing.T) {
	g := newConnGuard(3, 2, 4) // 3 open at most; 2/s per IP, burst 4
	a := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1000}
	b := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 1000}
	now := time.Unix(1000, 0)
	for i := range 4 {
		if ok, why := g.admit(a, 0, now); !ok {
			t.Fatalf("connection %d within the burst refused: %s", i, why)
		}
	}
	if ok, why := g.admit(a, 0, now); ok || why != refusedConnRate {
		t.Fatalf("fifth at once: %v %s, want refused for rate", ok, why)
	}
	if ok, _ := g.admit(b, 0, now); !ok {
		t.Fatal("another address was refused for the first one's rate")
	}
	if ok, _ := g.admit(a, 0, now.Add(500*time.Millisecond)); !ok {
		t.Fatal("a token refilled after 0.5 s at 2/s was not there")
	}
	if ok, why := g.admit(b, 3, now); ok || why != refusedTooManyConns {
		t.Fatalf("over MaxConns: %v %s", ok, why)
	}
	l := newLogOnce(10 * time.Second)
	if ok, _ := l.allow("r", now); !ok {
		t.Fatal("first not logged")
	}
	for range 5 {
		if ok, _ := l.allow("r", now.Add(time.Second)); ok {
			t.Fatal("logged again within the interval")
		}
	}
	if ok, held := l.allow("r", now.Add(11*time.Second)); !ok || held != 5 {
		t.Fatalf("after the interval: %v, %d held, want true, 5", ok, held)
	}
}

// TestConnectionFlood: 300 connections at once from 127.0.0.1 are cut
// before their TLS handshake once past the address's rate and counted,
// while a device connecting from 127.0.0.2 meanwhile logs in and posts.
func TestConnectionFlood(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.ConnRatePerIP = 5; c.ConnBurstPerIP = 10 })
	addr := e.srv.MQTTAddr().String()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 300 {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue
		}
		conns = append(conns, c)
	}
	// The legitimate device, from another address.
	ts := fmt.Sprintf("%d", time.Now().UnixMilli())
	cid, user, pass, err := enos.MQTTLogin("gwDK", "gwPK", "gwDK", "gwSecret", "sha256", ts)
	if err != nil {
		t.Fatal(err)
	}
	opts := paho.NewClientOptions().AddBroker("tls://" + addr).SetClientID(cid).SetUsername(user).SetPassword(pass).
		SetTLSConfig(e.clientTLS(e.ca, "gwDK")).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).SetDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second})
	dev := paho.NewClient(opts)
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("the device beside the flood could not log in: %v", tok.Error())
	}
	defer dev.Disconnect(50)
	replies := subscribe(t, dev, batchTopic+enos.ReplySuffix)
	if !publish(dev, batchTopic, enos.AppendPostBatch(nil, 1, "gw-01", 1, testRecords(1, 1, 2)), 5*time.Second) {
		t.Fatal("no PUBACK for the device beside the flood")
	}
	if r := nextReply(t, replies); r.Code != 200 {
		t.Fatalf("post beside the flood: %+v", r)
	}
	eventually(t, "the flood counted", func() bool {
		return e.metric("ingest_connections_refused_total", refusedConnRate) >= 250
	})
}
