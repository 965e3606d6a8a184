// The load of bench/http.sh: CLIENTS concurrent clients run pgbench -S's statement (one row of
// pgbench_accounts by a random aid) against pgflow pooler's http listener for SECONDS, over
// HTTP keep-alive (POST /sql, one connection per client, as Neon's serverless driver sends
// it) or over a WebSocket session each (the PostgreSQL protocol in binary messages, simple
// Query as pgbench -S's default). Prints the queries per second. Standard library only, and
// both clients written by hand as lean as pgbench: HTTP/1.1 requests and answers, and the few
// WebSocket frames needed (RFC 6455, masked binary frames).
//
// Usage: http_load -mode http|ws -addr 127.0.0.1:PORT -url postgres://user:pw@h/db \
// -clients 40 -seconds 10 -scale 10
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	mrand "math/rand"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	mode    = flag.String("mode", "http", "http or ws")
	addr    = flag.String("addr", "", "host:port of the pooler's http listener")
	connStr = flag.String("url", "", "the connection string (user, password, database)")
	clients = flag.Int("clients", 40, "concurrent clients")
	seconds = flag.Float64("seconds", 10, "how long")
	scale   = flag.Int("scale", 10, "pgbench's scale (100,000 accounts each)")
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "http_load: "+format+"\n", args...)
	os.Exit(1)
}

// One client over one keep-alive connection, written and read by hand (Go's net/http costs
// three times pgbench's CPU per query on the same cores, which the pooler would pay for on a
// 2-core machine): the request as the driver sends it, the answer's status, length and row
// count checked.
func httpClient(done *atomic.Bool, count *atomic.Int64, wg *sync.WaitGroup) {
	defer wg.Done()
	conn, err := net.Dial("tcp", *addr)
	if err != nil {
		fail("%v", err)
	}
	reader := bufio.NewReaderSize(conn, 65536)
	rng := mrand.New(mrand.NewSource(int64(mrand.Int())))
	head := "POST /sql HTTP/1.1\r\nHost: " + *addr + "\r\nNeon-Connection-String: " + *connStr +
		"\r\nNeon-Raw-Text-Output: true\r\nNeon-Array-Mode: true\r\n" +
		"Content-Type: application/json\r\nContent-Length: "
	var request []byte
	var body []byte
	for !done.Load() {
		aid := rng.Intn(*scale*100000) + 1
		body = fmt.Appendf(body[:0], `{"query":"SELECT abalance FROM pgbench_accounts WHERE aid = $1","params":["%d"]}`, aid)
		request = fmt.Appendf(request[:0], "%s%d\r\n\r\n%s", head, len(body), body)
		if _, err := conn.Write(request); err != nil {
			fail("%v", err)
		}
		status, length := 0, -1
		for {
			line, err := reader.ReadSlice('\n')
			if err != nil {
				fail("%v", err)
			}
			if status == 0 {
				fmt.Sscanf(string(line), "HTTP/1.1 %d", &status)
			} else if len(line) <= 2 {
				break
			} else if bytes.HasPrefix(bytes.ToLower(line), []byte("content-length:")) {
				fmt.Sscanf(string(line[15:]), "%d", &length)
			}
		}
		if length < 0 {
			fail("an answer without Content-Length (status %d)", status)
		}
		answer := make([]byte, length)
		if _, err := io.ReadFull(reader, answer); err != nil {
			fail("%v", err)
		}
		if status != 200 || !bytes.Contains(answer, []byte(`"rowCount":1`)) {
			fail("status %d: %s", status, answer)
		}
		count.Add(1)
	}
	conn.Close()
}

// A WebSocket client's connection: writes masked binary frames, reads the server's frames.
type wsConn struct {
	conn   net.Conn
	reader *bufio.Reader
	in     []byte // the protocol bytes received and not yet taken
}

func dialWebSocket() *wsConn {
	conn, err := net.Dial("tcp", *addr)
	if err != nil {
		fail("%v", err)
	}
	key := make([]byte, 16)
	rand.Read(key)
	fmt.Fprintf(conn, "GET /v2 HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", *addr,
		base64.StdEncoding.EncodeToString(key))
	reader := bufio.NewReaderSize(conn, 65536)
	resp, err := http.ReadResponse(reader, nil)
	if err != nil || resp.StatusCode != 101 {
		fail("the upgrade failed: %v %v", err, resp)
	}
	return &wsConn{conn: conn, reader: reader}
}

func (w *wsConn) send(payload []byte) {
	frame := []byte{0x82} // FIN, binary
	n := len(payload)
	switch {
	case n < 126:
		frame = append(frame, byte(0x80|n))
	case n < 65536:
		frame = append(frame, 0x80|126, byte(n>>8), byte(n))
	default:
		frame = append(frame, 0x80|127)
		frame = binary.BigEndian.AppendUint64(frame, uint64(n))
	}
	mask := []byte{0x12, 0x34, 0x56, 0x78}
	frame = append(frame, mask...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	if _, err := w.conn.Write(frame); err != nil {
		fail("%v", err)
	}
}

// Reads frames until a whole protocol message is buffered; returns its type and body.
func (w *wsConn) message() (byte, []byte) {
	for {
		if len(w.in) >= 5 {
			size := int(binary.BigEndian.Uint32(w.in[1:5])) + 1
			if len(w.in) >= size {
				t, body := w.in[0], w.in[5:size]
				w.in = w.in[size:]
				return t, body
			}
		}
		var head [2]byte
		if _, err := io.ReadFull(w.reader, head[:]); err != nil {
			fail("%v", err)
		}
		n := uint64(head[1] & 0x7f)
		if n == 126 {
			var ext [2]byte
			io.ReadFull(w.reader, ext[:])
			n = uint64(binary.BigEndian.Uint16(ext[:]))
		} else if n == 127 {
			var ext [8]byte
			io.ReadFull(w.reader, ext[:])
			n = binary.BigEndian.Uint64(ext[:])
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(w.reader, payload); err != nil {
			fail("%v", err)
		}
		if head[0]&0x0f == 0x8 {
			fail("the server closed the WebSocket")
		}
		w.in = append(w.in, payload...)
	}
}

func pgMessage(t byte, body []byte) []byte {
	out := []byte{t, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(len(body)+4))
	return append(out, body...)
}

func wsClient(done *atomic.Bool, count *atomic.Int64, wg *sync.WaitGroup, ready *sync.WaitGroup) {
	defer wg.Done()
	u, err := url.Parse(*connStr)
	if err != nil {
		fail("%v", err)
	}
	password, _ := u.User.Password()
	w := dialWebSocket()
	var startup []byte
	startup = binary.BigEndian.AppendUint32(startup, 0)
	startup = binary.BigEndian.AppendUint32(startup, 196608)
	for _, kv := range [][2]string{{"user", u.User.Username()}, {"database", strings.TrimPrefix(u.Path, "/")}} {
		startup = append(append(append(append(startup, kv[0]...), 0), kv[1]...), 0)
	}
	startup = append(startup, 0)
	binary.BigEndian.PutUint32(startup, uint32(len(startup)))
	w.send(append(startup, pgMessage('p', append([]byte(password), 0))...)) // pipelined, as the driver
	for {
		t, body := w.message()
		if t == 'E' {
			fail("login refused: %q", body)
		}
		if t == 'Z' {
			break
		}
	}
	ready.Done()
	rng := mrand.New(mrand.NewSource(int64(mrand.Int())))
	for !done.Load() {
		aid := rng.Intn(*scale*100000) + 1
		sql := fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d;", aid)
		w.send(pgMessage('Q', append([]byte(sql), 0)))
		rows := 0
		for {
			t, body := w.message()
			if t == 'E' {
				fail("query failed: %q", body)
			}
			if t == 'D' {
				rows++
			}
			if t == 'Z' {
				break
			}
		}
		if rows != 1 {
			fail("%d rows", rows)
		}
		count.Add(1)
	}
	w.conn.Close()
}

func main() {
	flag.Parse()
	var done atomic.Bool
	var count atomic.Int64
	var wg, ready sync.WaitGroup
	ready.Add(*clients)
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		if *mode == "ws" {
			go wsClient(&done, &count, &wg, &ready)
		} else {
			ready.Done()
			go httpClient(&done, &count, &wg)
		}
	}
	ready.Wait()
	start := time.Now()
	before := count.Load()
	time.Sleep(time.Duration(*seconds * float64(time.Second)))
	n := count.Load() - before
	elapsed := time.Since(start).Seconds()
	done.Store(true)
	wg.Wait()
	fmt.Printf("%.0f\n", float64(n)/elapsed)
}
