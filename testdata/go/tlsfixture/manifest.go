package main

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"sync"
)

// manifest writes JSON Lines, one Write (O_APPEND) per line, under a mutex so
// lines never interleave and their order is the order the calls completed.
type manifest struct {
	mu     sync.Mutex
	f      *os.File
	nextID int
}

type connLine struct {
	Type   string `json:"type"`
	Conn   int    `json:"conn"`
	Pid    int    `json:"pid"`
	Local  string `json:"local"`
	Remote string `json:"remote"`
}

type callLine struct {
	Type string `json:"type"`
	Conn int    `json:"conn"`
	Dir  string `json:"dir"`
	Data []byte `json:"data_b64"` // encoding/json writes []byte as standard base64
}

type requestLine struct {
	Type    string `json:"type"`
	Nonce   string `json:"nonce"`
	ReqLen  int    `json:"req_len"`
	RespLen int    `json:"resp_len"`
}

func openManifest(path string) (*manifest, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0644)
	if err != nil {
		return nil, err
	}
	return &manifest{f: f}, nil
}

// line writes v as one line; the caller holds m.mu.
func (m *manifest) lineLocked(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	if _, err := m.f.Write(append(b, '\n')); err != nil {
		panic("manifest write: " + err.Error())
	}
}

func (m *manifest) line(v interface{}) {
	m.mu.Lock()
	m.lineLocked(v)
	m.mu.Unlock()
}

// lock blocks further lines (used at exit so no line is cut short).
func (m *manifest) lock() { m.mu.Lock() }

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// wrap records a new connection and returns a net.Conn that logs every
// Write (at entry: the bytes passed) and every Read with n > 0 (at return:
// the bytes obtained) made on the *tls.Conn tc. Its addresses are those of
// the underlying raw connection.
func (m *manifest) wrap(tc *tls.Conn) net.Conn {
	m.mu.Lock()
	m.nextID++
	id := m.nextID
	m.lineLocked(connLine{"conn", id, os.Getpid(), addrString(tc.LocalAddr()), addrString(tc.RemoteAddr())})
	m.mu.Unlock()
	return &recConn{Conn: tc, tc: tc, m: m, id: id}
}

type recConn struct {
	net.Conn // the *tls.Conn, for deadlines, addresses and Close
	tc       *tls.Conn
	m        *manifest
	id       int
}

// Write records the whole buffer before the call (as a probe on entry would
// see it), so a reply can never be logged before the request that caused it.
func (c *recConn) Write(b []byte) (int, error) {
	if len(b) > 0 {
		c.m.line(callLine{"call", c.id, "write", b})
	}
	return c.tc.Write(b)
}

// Read records what (*tls.Conn).Read returned, before returning it.
func (c *recConn) Read(b []byte) (int, error) {
	n, err := c.tc.Read(b)
	if n > 0 {
		c.m.line(callLine{"call", c.id, "read", b[:n]})
	}
	return n, err
}
