// Command tlsbench is the benchmark's manifest-free HTTPS echo server: the same /echo API as
// testdata/go/tlsfixture's server (POST /echo?size=N[&chunk=-1], header X-Nonce), but it records
// nothing and answers from a buffer made once, so at large bodies the traced process spends its
// CPU on TLS and the copies, not on encoding a manifest. Standard library only.
//
//	tlsbench server   prints "LISTEN 127.0.0.1:PORT" and serves until killed
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

var payload = make([]byte, 8<<20)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "server" {
		fmt.Fprintln(os.Stderr, "usage: tlsbench server")
		os.Exit(2)
	}
	rand.Read(payload)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tlsbench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	check(err)
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos: []string{"http/1.1"}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", echo)
	srv := &http.Server{Handler: mux, TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	check(srv.Serve(tls.NewListener(ln, cfg)))
}

// echo reads the whole body, then answers size bytes that begin with the nonce; chunk=-1: the
// whole response (headers and body) in ONE Write on the hijacked connection, then close.
func echo(w http.ResponseWriter, r *http.Request) {
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	size, err := strconv.Atoi(r.URL.Query().Get("size"))
	nonce := r.Header.Get("X-Nonce")
	if err != nil || size < len(nonce) {
		http.Error(w, "need size=N >= len(X-Nonce)", http.StatusBadRequest)
		return
	}
	body := make([]byte, 0, size)
	body = append(body, nonce...)
	for len(body) < size {
		n := size - len(body)
		if n > len(payload) {
			n = len(payload)
		}
		body = append(body, payload[:n]...)
	}
	if r.URL.Query().Get("chunk") == "-1" {
		conn, bufrw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		bufrw.Flush()
		head := fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Nonce: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", nonce, size)
		conn.Write(append([]byte(head), body...))
		return
	}
	w.Header().Set("X-Nonce", nonce)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(size))
	w.Write(body)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlsbench:", err)
		os.Exit(1)
	}
}
