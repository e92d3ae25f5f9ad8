// Command oddconn exercises the cases where a capture cannot name the socket or cannot read
// the bytes, in one process that is both TLS server and client on 127.0.0.1:
//
//  1. Both ends run TLS over a net.Conn wrapped in a type of their own (as a metrics or
//     rate-limiting wrapper would be): the client writes "PING-wrapped-<i>" and the server
//     answers "PONG-wrapped-<i>", for i in 0..2.
//  2. The client then writes a 64 KiB buffer that is a fresh mmap of a file (pages not yet
//     touched by this process: a probe's non-faulting read of them fails) and the server
//     answers "GOT <n>".
//
// It prints "DONE" when all of it went through. It waits for a line on stdin first, so that a
// test can hook it before the first byte.
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"io/ioutil"
	"math/big"
	"net"
	"os"
	"syscall"
	"time"
)

// MmapSize is the size of the mmapped write.
const MmapSize = 64 * 1024

// wrapped is a net.Conn of the program's own type: tls.Conn.conn then holds no *net.TCPConn.
type wrapped struct {
	net.Conn
	bytesRead int
}

func (w *wrapped) Read(b []byte) (int, error) {
	n, err := w.Conn.Read(b)
	w.bytesRead += n
	return n, err
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "oddconn:", err)
		os.Exit(1)
	}
}

func run() error {
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println("READY")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- serve(ln, cert) }()

	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	c := tls.Client(&wrapped{Conn: raw}, &tls.Config{InsecureSkipVerify: true})
	defer c.Close()
	buf := make([]byte, 64)
	for i := 0; i < 3; i++ {
		if _, err := fmt.Fprintf(c, "PING-wrapped-%d", i); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf[:len("PONG-wrapped-0")]); err != nil {
			return err
		}
	}
	mapped, err := freshMapping()
	if err != nil {
		return err
	}
	if _, err := c.Write(mapped); err != nil {
		return err
	}
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if want := fmt.Sprintf("GOT %d", MmapSize); string(buf[:n]) != want {
		return fmt.Errorf("server said %q, want %q", buf[:n], want)
	}
	if err := <-served; err != nil {
		return err
	}
	fmt.Println("DONE")
	return nil
}

func serve(ln net.Listener, cert tls.Certificate) error {
	raw, err := ln.Accept()
	if err != nil {
		return err
	}
	c := tls.Server(&wrapped{Conn: raw}, &tls.Config{Certificates: []tls.Certificate{cert}})
	defer c.Close()
	buf := make([]byte, MmapSize)
	for i := 0; i < 3; i++ {
		if _, err := io.ReadFull(c, buf[:len("PING-wrapped-0")]); err != nil {
			return err
		}
		if _, err := fmt.Fprintf(c, "PONG-wrapped-%d", i); err != nil {
			return err
		}
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	for i, b := range buf {
		if b != pattern(i) {
			return fmt.Errorf("byte %d of the mapped write is %d", i, b)
		}
	}
	_, err = fmt.Fprintf(c, "GOT %d", MmapSize)
	return err
}

// pattern is byte i of the mapped file.
func pattern(i int) byte { return byte('a' + i%26) }

// freshMapping writes a file and maps it; this process has not touched the mapping's pages.
func freshMapping() ([]byte, error) {
	f, err := ioutil.TempFile("", "oddconn")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	data := make([]byte, MmapSize)
	for i := range data {
		data[i] = pattern(i)
	}
	if _, err := f.Write(data); err != nil {
		return nil, err
	}
	return syscall.Mmap(int(f.Fd()), 0, MmapSize, syscall.PROT_READ, syscall.MAP_SHARED)
}

// selfSigned makes an in-memory ECDSA P-256 certificate for 127.0.0.1.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "oddconn"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
