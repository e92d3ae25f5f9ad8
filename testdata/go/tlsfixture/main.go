// Command tlsfixture is a test peer for tlstap: an HTTPS echo server and client
// that record every (*tls.Conn).Write and Read, byte for byte, in a JSON Lines
// manifest. It must build with every Go from 1.13 on in GOPATH mode
// (GO111MODULE=off): keep to the Go 1.13 API (ioutil, no generics, no `any`).
//
//	tlsfixture server --manifest FILE [--addr 127.0.0.1:0] [--unix PATH] [--tls-max 1.2|1.3]
//	tlsfixture client (--addr HOST:PORT | --unix PATH) --manifest FILE --requests N
//	    --sizes 10,1000,16000 [--seed S] [--conns K] [--tls-max 1.2|1.3] [--wait-stdin]
package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = serverMain(os.Args[2:])
	case "client":
		err = clientMain(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlsfixture %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: tlsfixture server|client [flags] (see -h)")
	os.Exit(2)
}

// tlsMax maps --tls-max to a tls.Config.MaxVersion (0 = library default).
func tlsMax(s string) (uint16, error) {
	switch s {
	case "":
		return 0, nil
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("--tls-max must be 1.2 or 1.3, got %q", s)
}

// parseSizes parses "10,1000,16000".
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad size %q in --sizes", f)
		}
		out = append(out, n)
	}
	return out, nil
}
