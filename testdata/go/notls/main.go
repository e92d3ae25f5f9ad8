// Command notls is a Go program that does not link crypto/tls (it uses net,
// not net/http): tlstap must refuse it with a clear "no crypto/tls" error.
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "notls:", err)
		os.Exit(1)
	}
	fmt.Println("notls: plain TCP on", ln.Addr().String())
	ln.Close()
}
