package main

import (
	"io"
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/ioutil"
	"math/rand"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

type clientOpts struct {
	addr, unixPath string
	requests       int
	sizes          []int
	tmax           uint16
	m              *manifest
	writeChunk     int
}

// chunkReader hands out at most n bytes per Read and hides bytes.Reader's WriteTo, so that
// io.Copy (and so the HTTP client) writes the body in n-byte pieces.
type chunkReader struct {
	r *bytes.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

func clientMain(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	var o clientOpts
	fs.StringVar(&o.addr, "addr", "", "server HOST:PORT")
	fs.StringVar(&o.unixPath, "unix", "", "server unix socket path (instead of --addr)")
	manifestPath := fs.String("manifest", "", "JSON Lines manifest to append to (required)")
	fs.IntVar(&o.requests, "requests", 1, "number of requests")
	sizes := fs.String("sizes", "10,1000,16000", "request body sizes, cycled; responses cycle them in reverse")
	seed := fs.Int64("seed", 0, "random seed (0: time-based)")
	conns := fs.Int("conns", 1, "keep-alive connections (requests are spread over them)")
	maxVer := fs.String("tls-max", "", "highest TLS version: 1.2 or 1.3")
	waitStdin := fs.Bool("wait-stdin", false, "read one line from stdin before connecting")
	fs.IntVar(&o.writeChunk, "write-chunk", 0, "write bodies (request, and the server's response) in pieces of this many bytes (0: as net/http does; -1: each request and response in ONE Write, a connection per request)")
	fs.Parse(args)

	var err error
	switch {
	case *manifestPath == "":
		return errors.New("--manifest is required")
	case (o.addr == "") == (o.unixPath == ""):
		return errors.New("give exactly one of --addr and --unix")
	case o.requests < 0 || *conns < 1:
		return errors.New("--requests must be >= 0 and --conns >= 1")
	}
	if o.sizes, err = parseSizes(*sizes); err != nil {
		return err
	}
	if o.tmax, err = tlsMax(*maxVer); err != nil {
		return err
	}
	if o.m, err = openManifest(*manifestPath); err != nil {
		return err
	}
	if *seed == 0 {
		*seed = time.Now().UnixNano()
	}
	if *waitStdin {
		bufio.NewReader(os.Stdin).ReadString('\n')
	}

	// Worker w does requests w, w+K, w+2K, ... over its own single connection.
	errs := make(chan error, *conns)
	var wg sync.WaitGroup
	for w := 0; w < *conns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			errs <- o.worker(w, *conns, rand.New(rand.NewSource(*seed+int64(w))))
		}(w)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// dialTLS dials the server, completes the handshake and returns the recording wrapper.
func (o *clientOpts) dialTLS(network, addr string) (net.Conn, error) {
	var raw net.Conn
	var err error
	if o.unixPath != "" {
		raw, err = net.Dial("unix", o.unixPath)
	} else {
		raw, err = net.Dial("tcp", o.addr)
	}
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, &tls.Config{
		InsecureSkipVerify: true,
		ServerName:         "localhost",
		MaxVersion:         o.tmax,
		NextProtos:         []string{"http/1.1"},
	})
	if err := tc.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	return o.m.wrap(tc), nil
}

func (o *clientOpts) worker(w, k int, rnd *rand.Rand) error {
	tr := &http.Transport{
		DialTLS:             o.dialTLS,
		MaxIdleConnsPerHost: 1,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{}, // no h2
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	host := o.addr
	if host == "" {
		host = "localhost"
	}
	n := len(o.sizes)
	for i := w; i < o.requests; i += k {
		reqLen, respLen := o.sizes[i%n], o.sizes[n-1-i%n]
		var nb [8]byte
		rnd.Read(nb[:])
		nonce := hex.EncodeToString(nb[:])
		body := make([]byte, reqLen)
		rnd.Read(body)
		copy(body, nonce)
		if o.writeChunk == -1 {
			if err := o.oneWriteRequest(host, nonce, body, respLen); err != nil {
				return fmt.Errorf("request %d: %v", i, err)
			}
			o.m.line(requestLine{"request", nonce, reqLen, respLen})
			continue
		}

		var bodyReader io.Reader = bytes.NewReader(body)
		if o.writeChunk > 0 {
			bodyReader = &chunkReader{bytes.NewReader(body), o.writeChunk}
		}
		url := fmt.Sprintf("https://%s/echo?size=%d&chunk=%d", host, respLen, o.writeChunk)
		req, err := http.NewRequest("POST", url, bodyReader)
		if err != nil {
			return err
		}
		req.ContentLength = int64(reqLen)
		req.Header.Set("X-Nonce", nonce)
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("request %d: %v", i, err)
		}
		got, err := ioutil.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			return fmt.Errorf("request %d: reading response: %v", i, err)
		case resp.StatusCode != 200:
			return fmt.Errorf("request %d: status %s: %s", i, resp.Status, got)
		case resp.Header.Get("X-Nonce") != nonce:
			return fmt.Errorf("request %d: X-Nonce %q, want %q", i, resp.Header.Get("X-Nonce"), nonce)
		case len(got) != respLen:
			return fmt.Errorf("request %d: got %d body bytes, want %d", i, len(got), respLen)
		case !bytes.HasPrefix(got, []byte(nonce)) && !bytes.HasPrefix([]byte(nonce), got):
			return fmt.Errorf("request %d: response body does not begin with the nonce", i)
		}
		o.m.line(requestLine{"request", nonce, reqLen, respLen})
	}
	return nil
}

// oneWriteRequest sends the whole request (headers and body) in ONE Write on a fresh
// connection, asks the server to answer in one Write too, and checks the answer.
func (o *clientOpts) oneWriteRequest(host, nonce string, body []byte, respLen int) error {
	conn, err := o.dialTLS("", "")
	if err != nil {
		return err
	}
	defer conn.Close()
	head := fmt.Sprintf("POST /echo?size=%d&chunk=-1 HTTP/1.1\r\nHost: %s\r\nX-Nonce: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", respLen, host, nonce, len(body))
	if _, err := conn.Write(append([]byte(head), body...)); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return err
	}
	got, err := ioutil.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return err
	case resp.StatusCode != 200:
		return fmt.Errorf("status %s: %s", resp.Status, got)
	case len(got) != respLen || !bytes.HasPrefix(got, []byte(nonce)) && !bytes.HasPrefix([]byte(nonce), got):
		return fmt.Errorf("bad response body (%d bytes)", len(got))
	}
	return nil
}
