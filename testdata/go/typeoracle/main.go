// Command typeoracle prints, via reflect, the struct field offsets that goelf's
// types::conn_layout derives from a binary's type descriptors: the independent oracle
// for crates/goelf/tests/types.rs (built per toolchain by scripts/fixture.sh).
//
// Output: one "KEY VALUE" line each; offsets in decimal.
package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"reflect"
)

func field(t reflect.Type, name string) reflect.StructField {
	f, ok := t.FieldByName(name)
	if !ok || len(f.Index) != 1 {
		fmt.Fprintf(os.Stderr, "typeoracle: %v has no direct field %s\n", t, name)
		os.Exit(1)
	}
	return f
}

func main() {
	tlsConn := reflect.TypeOf((*tls.Conn)(nil))
	conn := field(tlsConn.Elem(), "conn")
	tcp := reflect.TypeOf((*net.TCPConn)(nil))
	tcpConn := field(tcp.Elem(), "conn")
	fd := field(tcpConn.Type, "fd")
	pfd := field(fd.Type.Elem(), "pfd")
	sysfd := field(pfd.Type, "Sysfd")
	unix := reflect.TypeOf((*net.UnixConn)(nil))
	unixConn := field(unix.Elem(), "conn")

	fmt.Println("tls.Conn.conn", conn.Offset)
	fmt.Println("tls.Conn.conn.type", conn.Type.String())
	fmt.Println("net.TCPConn.conn", tcpConn.Offset)
	fmt.Println("net.TCPConn.conn.embedded", tcpConn.Anonymous)
	fmt.Println("net.conn.fd", fd.Offset)
	fmt.Println("net.netFD.pfd", pfd.Offset)
	fmt.Println("poll.FD.Sysfd", sysfd.Offset)
	fmt.Println("net.UnixConn.conn", unixConn.Offset)
	fmt.Println("tls.Conn.size", tlsConn.Elem().Size())
	fmt.Println("ptr.tls", tlsConn.String(), tlsConn.Elem().PkgPath())
	fmt.Println("ptr.tcp", tcp.String(), tcp.Elem().PkgPath())
	fmt.Println("ptr.unix", unix.String(), unix.Elem().PkgPath())
	fmt.Println("poll.FD.pkg", pfd.Type.PkgPath())
}
