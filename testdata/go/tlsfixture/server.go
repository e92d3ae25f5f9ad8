package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io/ioutil"
	"math/big"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// recListener wraps tls.NewListener: every accepted *tls.Conn is recorded.
type recListener struct {
	net.Listener
	m *manifest
}

func (l *recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.m.wrap(c.(*tls.Conn)), nil
}

// selfSigned makes an in-memory ECDSA P-256 certificate for localhost/127.0.0.1.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "tlsfixture"},
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

// lockedRand is a math/rand source safe for concurrent handlers.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func (l *lockedRand) fill(b []byte) {
	l.mu.Lock()
	l.r.Read(b)
	l.mu.Unlock()
}

// echoHandler serves POST /echo?size=N[&chunk=C]: reads the whole body, answers N
// pseudo-random bytes beginning with the request's X-Nonce (echoed as a header),
// through net/http or, with chunk=C > 0, in C-byte Writes. With chunk=-1 it hijacks
// the connection and writes the whole response (headers and body) in ONE Write,
// then closes the connection.
func echoHandler(rnd *lockedRand) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, err := ioutil.ReadAll(r.Body)
		if r.Method != "POST" || err != nil {
			http.Error(w, "want POST with a readable body", http.StatusBadRequest)
			return
		}
		size, err := strconv.Atoi(r.URL.Query().Get("size"))
		nonce := r.Header.Get("X-Nonce")
		if err != nil || size < 0 || len(nonce) != 16 {
			http.Error(w, "need size=N and a 16-char X-Nonce", http.StatusBadRequest)
			return
		}
		if !bytes.HasPrefix([]byte(nonce), body) && !bytes.HasPrefix(body, []byte(nonce)) {
			http.Error(w, "request body does not begin with the nonce", http.StatusBadRequest)
			return
		}
		resp := make([]byte, size)
		rnd.fill(resp)
		copy(resp, nonce)
		w.Header().Set("X-Nonce", nonce)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		chunk, _ := strconv.Atoi(r.URL.Query().Get("chunk"))
		if chunk == -1 {
			writeWhole(w, nonce, resp)
			return
		}
		if chunk <= 0 {
			chunk = len(resp)
		}
		for len(resp) > 0 {
			n := chunk
			if n > len(resp) {
				n = len(resp)
			}
			if _, err := w.Write(resp[:n]); err != nil {
				return
			}
			resp = resp[n:]
		}
	})
	return mux
}

// writeWhole answers on the hijacked connection with a single Write.
func writeWhole(w http.ResponseWriter, nonce string, body []byte) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	conn, bufrw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	bufrw.Flush()
	head := fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Nonce: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", nonce, len(body))
	conn.Write(append([]byte(head), body...))
}

func serverMain(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	manifestPath := fs.String("manifest", "", "JSON Lines manifest to append to (required)")
	addr := fs.String("addr", "127.0.0.1:0", "TCP address to listen on")
	unixPath := fs.String("unix", "", "listen on this unix socket instead of TCP")
	maxVer := fs.String("tls-max", "", "highest TLS version: 1.2 or 1.3")
	fs.Parse(args)
	if *manifestPath == "" {
		return errors.New("--manifest is required")
	}
	tmax, err := tlsMax(*maxVer)
	if err != nil {
		return err
	}
	m, err := openManifest(*manifestPath)
	if err != nil {
		return err
	}
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MaxVersion:   tmax,
		NextProtos:   []string{"http/1.1"}, // HTTP/1.1 only
	}

	var raw net.Listener
	if *unixPath != "" {
		os.Remove(*unixPath)
		raw, err = net.Listen("unix", *unixPath)
	} else {
		raw, err = net.Listen("tcp", *addr)
	}
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:      echoHandler(&lockedRand{r: rand.New(rand.NewSource(time.Now().UnixNano()))}),
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}, // no h2
	}

	// SIGTERM/SIGINT: stop serving, let no manifest line be cut, exit 0.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		srv.Close() // also closes the listener (and removes the unix socket)
		m.lock()
		os.Exit(0)
	}()

	fmt.Fprintf(os.Stdout, "LISTEN %s\n", raw.Addr().String()) // os.Stdout is unbuffered
	err = srv.Serve(&recListener{Listener: tls.NewListener(raw, cfg), m: m})
	if err == http.ErrServerClosed {
		select {} // the signal goroutine exits the process
	}
	return err
}
