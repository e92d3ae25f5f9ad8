// Command httpfixture is the HTTP-level test peer for tlstap's HTTP decoding: an HTTPS server
// and client over HTTP/2 (net/http's default over TLS) or HTTP/1.1, each appending what it
// saw at the HTTP level to a JSON Lines manifest, the oracle tlstap's decoded exchanges are
// compared with. Keep to the Go 1.13 API (ioutil, no generics) and no go.mod (GOPATH mode).
//
//	httpfixture server --manifest FILE [--proto h2|h1] [--addr 127.0.0.1:0]
//	httpfixture client --addr HOST:PORT --manifest FILE [--proto h2|h1] --requests N
//	    [--sizes 10,1000] [--enc gzip,deflate,] [--pause-after K] [--wait-stdin]
//
// The server answers POST /echo?size=N&enc=E&trailer=T with N pseudo-random bytes that begin
// with the request's X-Nonce, compressed with E (gzip, deflate or none; Content-Encoding
// set), and a trailer X-Checksum when T=1. Server lines: {"side":"server","nonce",
// "method","path","proto","headers":{..},"body_b64"}; client lines: {"side":"client","nonce",
// "status","proto","headers":{..},"body_b64" (decoded),"raw_len"}. With --pause-after K the
// client reads a line from stdin after K requests, its connection kept open (tlstap then
// joins a connection whose HPACK tables are already in use).
package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"math/big"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type manifest struct {
	mu sync.Mutex
	f  *os.File
}

func (m *manifest) line(v interface{}) {
	b, _ := json.Marshal(v)
	m.mu.Lock()
	m.f.Write(append(b, '\n'))
	m.mu.Unlock()
}

func protos(p string) ([]string, error) {
	switch p {
	case "h2":
		return []string{"h2", "http/1.1"}, nil
	case "h1":
		return []string{"http/1.1"}, nil
	}
	return nil, fmt.Errorf("--proto must be h2 or h1, got %q", p)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: httpfixture server|client [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = server(os.Args[2:])
	case "client":
		err = client(os.Args[2:])
	default:
		err = errors.New("usage: httpfixture server|client [flags]")
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "httpfixture %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func openManifest(path string) (*manifest, error) {
	if path == "" {
		return nil, errors.New("--manifest is required")
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0600)
	if err != nil {
		return nil, err
	}
	return &manifest{f: f}, nil
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "httpfixture"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func compress(enc string, data []byte) []byte {
	var buf bytes.Buffer
	var w io.WriteCloser
	switch enc {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "deflate":
		w = zlib.NewWriter(&buf)
	default:
		return data
	}
	w.Write(data)
	w.Close()
	return buf.Bytes()
}

func decompress(enc string, data []byte) ([]byte, error) {
	var r io.Reader
	var err error
	switch enc {
	case "gzip":
		r, err = gzip.NewReader(bytes.NewReader(data))
	case "deflate":
		r, err = zlib.NewReader(bytes.NewReader(data))
	case "":
		return data, nil
	default:
		return nil, fmt.Errorf("unknown encoding %q", enc)
	}
	if err != nil {
		return nil, err
	}
	return ioutil.ReadAll(r)
}

func server(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	manifestPath := fs.String("manifest", "", "JSON Lines manifest to append to")
	addr := fs.String("addr", "127.0.0.1:0", "TCP address to listen on")
	proto := fs.String("proto", "h2", "h2 or h1")
	fs.Parse(args)
	m, err := openManifest(*manifestPath)
	if err != nil {
		return err
	}
	next, err := protos(*proto)
	if err != nil {
		return err
	}
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	var rndMu sync.Mutex
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, err := ioutil.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "unreadable body", http.StatusBadRequest)
			return
		}
		nonce := r.Header.Get("X-Nonce")
		m.line(map[string]interface{}{"side": "server", "nonce": nonce, "method": r.Method, "path": r.URL.RequestURI(),
			"proto": r.Proto, "headers": r.Header, "body_b64": base64.StdEncoding.EncodeToString(body)})
		q := r.URL.Query()
		size, _ := strconv.Atoi(q.Get("size"))
		resp := make([]byte, size)
		rndMu.Lock()
		rnd.Read(resp)
		rndMu.Unlock()
		copy(resp, nonce)
		enc := q.Get("enc")
		wire := compress(enc, resp)
		if q.Get("trailer") == "1" {
			w.Header().Set("Trailer", "X-Checksum")
		}
		w.Header().Set("X-Nonce", nonce)
		w.Header().Set("Content-Type", "application/octet-stream")
		if enc != "" {
			w.Header().Set("Content-Encoding", enc)
		}
		if q.Get("trailer") != "1" {
			w.Header().Set("Content-Length", strconv.Itoa(len(wire)))
		}
		w.Write(wire)
		if q.Get("trailer") == "1" {
			w.Header().Set("X-Checksum", fmt.Sprintf("len-%d", len(resp)))
		}
	})
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: next}}
	if *proto == "h1" {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		m.mu.Lock()
		os.Exit(0)
	}()
	fmt.Fprintf(os.Stdout, "LISTEN %s\n", l.Addr().String())
	// ServeTLS sets up HTTP/2 on the listener (adding "h2" to NextProtos where absent).
	return srv.ServeTLS(l, "", "")
}

func client(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	addr := fs.String("addr", "", "server HOST:PORT")
	manifestPath := fs.String("manifest", "", "JSON Lines manifest to append to")
	proto := fs.String("proto", "h2", "h2 or h1")
	requests := fs.Int("requests", 1, "number of requests")
	sizes := fs.String("sizes", "10,1000", "request body sizes, cycled; responses cycle them in reverse")
	encs := fs.String("enc", ",gzip,deflate", "response encodings to ask for, cycled (empty = none)")
	trailers := fs.Bool("trailers", false, "ask for a trailer on every response")
	pauseAfter := fs.Int("pause-after", -1, "after this many requests, read a line from stdin")
	waitStdin := fs.Bool("wait-stdin", false, "read a line from stdin before connecting")
	fs.Parse(args)
	m, err := openManifest(*manifestPath)
	if err != nil {
		return err
	}
	next, err := protos(*proto)
	if err != nil {
		return err
	}
	var sz []int
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			return fmt.Errorf("bad size %q", f)
		}
		sz = append(sz, n)
	}
	encList := strings.Split(*encs, ",")
	stdin := bufio.NewReader(os.Stdin)
	if *waitStdin {
		stdin.ReadString('\n')
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", NextProtos: next},
		ForceAttemptHTTP2:   *proto == "h2",
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		DisableCompression:  true,
	}
	if *proto == "h1" {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	n := len(sz)
	for i := 0; i < *requests; i++ {
		if i == *pauseAfter {
			stdin.ReadString('\n')
		}
		reqLen, respLen := sz[i%n], sz[n-1-i%n]
		enc := encList[i%len(encList)]
		var nb [8]byte
		rnd.Read(nb[:])
		nonce := hex.EncodeToString(nb[:])
		body := make([]byte, reqLen)
		rnd.Read(body)
		copy(body, nonce)
		trailer := "0"
		if *trailers {
			trailer = "1"
		}
		url := fmt.Sprintf("https://%s/echo?size=%d&enc=%s&trailer=%s", *addr, respLen, enc, trailer)
		req, err := http.NewRequest("POST", url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("X-Nonce", nonce)
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Accept-Encoding", "gzip, deflate")
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("request %d: %v", i, err)
		}
		raw, err := ioutil.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("request %d: reading: %v", i, err)
		}
		plain, err := decompress(resp.Header.Get("Content-Encoding"), raw)
		if err != nil || len(plain) != respLen || resp.StatusCode != 200 {
			return fmt.Errorf("request %d: status %d, %d bytes (%v)", i, resp.StatusCode, len(plain), err)
		}
		headers := resp.Header
		for k, v := range resp.Trailer {
			headers["Trailer:"+k] = v
		}
		m.line(map[string]interface{}{"side": "client", "nonce": nonce, "status": resp.StatusCode, "proto": resp.Proto,
			"headers": headers, "body_b64": base64.StdEncoding.EncodeToString(plain), "raw_len": len(raw)})
	}
	return nil
}
