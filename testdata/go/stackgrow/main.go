// stackgrow: TLS Writes made at every stack depth a fresh goroutine can have, so that some
// of them find the stack too small at (*tls.Conn).Write's own stack check and grow it there.
// A probe on that check's branch runs twice for such a call (before and after the growth):
// tlstap must capture each Write once (crates/tlstap/tests/capture.rs).
//
//	stackgrow N   makes N Writes of "write-NNNNN|" + padding over one loopback TLS connection,
//	              the i-th from a new goroutine i frames deep, then prints "done N".
//
// Builds with every Go from 1.13 on (GOPATH mode, no go.mod).
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
	"io/ioutil"
	"math/big"
	"os"
	"strconv"
	"time"
)

// deep recurses n frames, then calls f: each frame a few words, so that consecutive depths
// move the stack pointer by less than the frames between the goroutine and Write.
//
//go:noinline
func deep(n int, f func()) {
	if n == 0 {
		f()
		return
	}
	deep(n-1, f)
}

func main() {
	n, err := strconv.Atoi(os.Args[len(os.Args)-1])
	if err != nil || len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: stackgrow N")
		os.Exit(2)
	}
	cert, err := selfSigned()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	got := make(chan int64)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		m, _ := io.Copy(ioutil.Discard, c)
		got <- m
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var sent int64
	for i := 0; i < n; i++ {
		msg := []byte(fmt.Sprintf("write-%05d|%s", i, make([]byte, i%7)))
		done := make(chan error)
		go deep(i%1200, func() {
			_, err := c.Write(msg)
			done <- err
		})
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		sent += int64(len(msg))
	}
	c.Close()
	if m := <-got; m != sent {
		fmt.Fprintf(os.Stderr, "the server read %d bytes of %d\n", m, sent)
		os.Exit(1)
	}
	fmt.Println("done", n)
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "stackgrow"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
