// Command grpcfixture is the gRPC-level test peer for tlstap's gRPC decoding: a gRPC server and
// client over TLS (HTTP/2), each appending what it saw at the gRPC level to a JSON Lines
// manifest, the oracle tlstap's decoded calls are compared with. No protoc: the service is a
// hand-written grpc.ServiceDesc whose messages are wrappers.BytesValue. Keep to the Go 1.13 API
// (ioutil, no generics) and no go.mod (GOPATH mode; grpc-go, golang/protobuf and x/net come
// from Debian's golang-google-grpc-dev under /usr/share/gocode).
//
//	grpcfixture server --manifest FILE [--addr 127.0.0.1:0]
//	grpcfixture client --addr HOST:PORT --manifest FILE --calls N
//	    [--sizes 10,1000,20000] [--pause-after K] [--wait-stdin]
//
// Service tlstap.test.Echo, every request and response a BytesValue:
//   - Echo (unary): request "<nonce> <size>"; response <size> pseudo-random bytes beginning
//     with the nonce. Request "<nonce> fail": status NotFound, "no such thing <nonce>".
//   - Stream (server streaming, gzip-compressed both ways): request "<nonce> <size> <count>";
//     <count> responses of <size> bytes, each beginning with "<nonce> <index> ".
//   - Collect (client streaming): 3 requests, each beginning with "<nonce> <index> "; one
//     response, the requests' lengths in ASCII, space-separated ("10 1000 20000").
//
// Calls get header metadata x-nonce, successful ones trailer metadata x-checksum (hex SHA-256
// of the response values, concatenated). The client cycles Echo, Stream, Collect, fail over
// one grpc.ClientConn (one connection, HPACK tables reused), sizes cycled from --sizes, each
// call with outgoing metadata x-nonce (random hex) and x-call (Echo, Stream, Collect or fail).
// Server lines: {"side":"server","nonce","method","metadata":{..},"requests_b64":[..],
// "responses_b64":[..],"status_code","status_message"}; client lines: {"side":"client",
// "nonce","method","header":{..},"trailer":{..},"requests_b64","responses_b64","status_code",
// "status_message"}. Messages are logged serialized (proto.Marshal of the BytesValue: the bytes
// inside the gRPC length-prefixed message, before compression). With --pause-after K the
// client reads a line from stdin after K calls, its connection kept open.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/sha256"
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
	"math/big"
	"math/rand"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golang/protobuf/proto"
	"github.com/golang/protobuf/ptypes/wrappers"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const service = "tlstap.test.Echo"

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

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: grpcfixture server|client [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = server(os.Args[2:])
	case "client":
		err = client(os.Args[2:])
	default:
		err = errors.New("usage: grpcfixture server|client [flags]")
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "grpcfixture %s: %v\n", os.Args[1], err)
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
		Subject:      pkix.Name{CommonName: "grpcfixture"},
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

// serialized returns a BytesValue as it travels inside a gRPC message, base64-encoded.
func serialized(v *wrappers.BytesValue) string {
	b, err := proto.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func checksum(values [][]byte) string {
	h := sha256.New()
	for _, v := range values {
		h.Write(v)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// mdMap makes metadata JSON-friendly: never null, keys as grpc gives them (lowercase).
func mdMap(md metadata.MD) map[string][]string {
	out := map[string][]string{}
	for k, v := range md {
		out[k] = v
	}
	return out
}

// fixtureServer implements the three methods; it is the "srv" the handlers below receive.
type fixtureServer struct {
	m     *manifest
	rnd   *rand.Rand
	rndMu sync.Mutex
}

// payload returns size pseudo-random bytes that begin with prefix (truncated to size).
func (s *fixtureServer) payload(prefix string, size int) []byte {
	b := make([]byte, size)
	s.rndMu.Lock()
	s.rnd.Read(b)
	s.rndMu.Unlock()
	copy(b, prefix)
	return b
}

// record appends the server's manifest line for one call and returns err unchanged.
func (s *fixtureServer) record(ctx context.Context, method, nonce string, reqs, resps []*wrappers.BytesValue, err error) error {
	md, _ := metadata.FromIncomingContext(ctx)
	st := status.Convert(err)
	reqB64, respB64 := []string{}, []string{}
	for _, r := range reqs {
		reqB64 = append(reqB64, serialized(r))
	}
	for _, r := range resps {
		respB64 = append(respB64, serialized(r))
	}
	s.m.line(map[string]interface{}{"side": "server", "nonce": nonce, "method": method, "metadata": mdMap(md),
		"requests_b64": reqB64, "responses_b64": respB64, "status_code": int(st.Code()), "status_message": st.Message()})
	return err
}

func (s *fixtureServer) echo(ctx context.Context, req *wrappers.BytesValue) (*wrappers.BytesValue, error) {
	const method = "/" + service + "/Echo"
	f := strings.Fields(string(req.Value))
	nonce := ""
	if len(f) > 0 {
		nonce = f[0]
	}
	reqs := []*wrappers.BytesValue{req}
	grpc.SetHeader(ctx, metadata.Pairs("x-nonce", nonce))
	if len(f) == 2 && f[1] == "fail" {
		return nil, s.record(ctx, method, nonce, reqs, nil, status.Error(codes.NotFound, "no such thing "+nonce))
	}
	var size int
	var err error
	if len(f) != 2 {
		err = errors.New("want 2 fields")
	} else {
		size, err = strconv.Atoi(f[1])
	}
	if err != nil || size < 0 {
		return nil, s.record(ctx, method, nonce, reqs, nil, status.Errorf(codes.InvalidArgument, "bad Echo request %q", req.Value))
	}
	resp := &wrappers.BytesValue{Value: s.payload(nonce, size)}
	grpc.SetTrailer(ctx, metadata.Pairs("x-checksum", checksum([][]byte{resp.Value})))
	return resp, s.record(ctx, method, nonce, reqs, []*wrappers.BytesValue{resp}, nil)
}

func (s *fixtureServer) stream(stream grpc.ServerStream) error {
	const method = "/" + service + "/Stream"
	ctx := stream.Context()
	req := new(wrappers.BytesValue)
	if err := stream.RecvMsg(req); err != nil {
		return s.record(ctx, method, "", nil, nil, err)
	}
	reqs := []*wrappers.BytesValue{req}
	f := strings.Fields(string(req.Value))
	nonce := ""
	if len(f) > 0 {
		nonce = f[0]
	}
	var size, count int
	err := errors.New("want 3 fields")
	if len(f) == 3 {
		if size, err = strconv.Atoi(f[1]); err == nil {
			count, err = strconv.Atoi(f[2])
		}
	}
	if err != nil || size < 0 || count < 0 {
		return s.record(ctx, method, nonce, reqs, nil, status.Errorf(codes.InvalidArgument, "bad Stream request %q", req.Value))
	}
	stream.SetHeader(metadata.Pairs("x-nonce", nonce))
	var resps []*wrappers.BytesValue
	var values [][]byte
	for k := 0; k < count; k++ {
		resp := &wrappers.BytesValue{Value: s.payload(fmt.Sprintf("%s %d ", nonce, k), size)}
		if err := stream.SendMsg(resp); err != nil {
			return s.record(ctx, method, nonce, reqs, resps, err)
		}
		resps = append(resps, resp)
		values = append(values, resp.Value)
	}
	stream.SetTrailer(metadata.Pairs("x-checksum", checksum(values)))
	return s.record(ctx, method, nonce, reqs, resps, nil)
}

func (s *fixtureServer) collect(stream grpc.ServerStream) error {
	const method = "/" + service + "/Collect"
	ctx := stream.Context()
	nonce := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("x-nonce")) > 0 {
		nonce = md.Get("x-nonce")[0]
	}
	var reqs []*wrappers.BytesValue
	var lens []string
	for {
		req := new(wrappers.BytesValue)
		err := stream.RecvMsg(req)
		if err == io.EOF {
			break
		}
		if err != nil {
			return s.record(ctx, method, nonce, reqs, nil, err)
		}
		reqs = append(reqs, req)
		lens = append(lens, strconv.Itoa(len(req.Value)))
	}
	stream.SetHeader(metadata.Pairs("x-nonce", nonce))
	resp := &wrappers.BytesValue{Value: []byte(strings.Join(lens, " "))}
	if err := stream.SendMsg(resp); err != nil {
		return s.record(ctx, method, nonce, reqs, nil, err)
	}
	stream.SetTrailer(metadata.Pairs("x-checksum", checksum([][]byte{resp.Value})))
	return s.record(ctx, method, nonce, reqs, []*wrappers.BytesValue{resp}, nil)
}

// The service description protoc would have generated.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: service,
	HandlerType: (*interface{})(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv interface{}, ctx context.Context, dec func(interface{}) error, interceptor grpc.UnaryServerInterceptor) (interface{}, error) {
			req := new(wrappers.BytesValue)
			if err := dec(req); err != nil {
				return nil, err
			}
			return srv.(*fixtureServer).echo(ctx, req)
		},
	}},
	Streams: []grpc.StreamDesc{
		{StreamName: "Stream", ServerStreams: true,
			Handler: func(srv interface{}, stream grpc.ServerStream) error { return srv.(*fixtureServer).stream(stream) }},
		{StreamName: "Collect", ClientStreams: true,
			Handler: func(srv interface{}, stream grpc.ServerStream) error { return srv.(*fixtureServer).collect(stream) }},
	},
}

func server(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	manifestPath := fs.String("manifest", "", "JSON Lines manifest to append to")
	addr := fs.String("addr", "127.0.0.1:0", "TCP address to listen on")
	fs.Parse(args)
	m, err := openManifest(*manifestPath)
	if err != nil {
		return err
	}
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	// credentials.NewTLS adds "h2" to NextProtos.
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	srv.RegisterService(&serviceDesc, &fixtureServer{m: m, rnd: rand.New(rand.NewSource(time.Now().UnixNano()))})
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		m.mu.Lock()
		os.Exit(0)
	}()
	fmt.Fprintf(os.Stdout, "LISTEN %s\n", l.Addr().String())
	return srv.Serve(l)
}

// callResult is what the client saw of one call.
type callResult struct {
	method        string
	header        metadata.MD
	trailer       metadata.MD
	reqs, resps   []*wrappers.BytesValue
	err           error
	checkResponse func() error // nil when the call is meant to fail
}

func client(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	addr := fs.String("addr", "", "server HOST:PORT")
	manifestPath := fs.String("manifest", "", "JSON Lines manifest to append to")
	calls := fs.Int("calls", 1, "number of calls (cycling Echo, Stream, Collect, fail)")
	sizes := fs.String("sizes", "10,1000,20000", "response (Echo, Stream) and request (Collect) sizes, cycled")
	pauseAfter := fs.Int("pause-after", -1, "after this many calls, read a line from stdin")
	waitStdin := fs.Bool("wait-stdin", false, "read a line from stdin before connecting")
	fs.Parse(args)
	m, err := openManifest(*manifestPath)
	if err != nil {
		return err
	}
	var sz []int
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return fmt.Errorf("bad size %q", f)
		}
		sz = append(sz, n)
	}
	stdin := bufio.NewReader(os.Stdin)
	if *waitStdin {
		stdin.ReadString('\n')
	}
	creds := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
	dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	conn, err := grpc.DialContext(dctx, *addr, grpc.WithTransportCredentials(creds), grpc.WithBlock())
	cancel()
	if err != nil {
		return fmt.Errorf("dial %s: %v", *addr, err)
	}
	defer conn.Close()
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	payload := func(prefix string, size int) []byte {
		b := make([]byte, size)
		rnd.Read(b)
		copy(b, prefix)
		return b
	}
	n := len(sz)
	for i := 0; i < *calls; i++ {
		if i == *pauseAfter {
			stdin.ReadString('\n')
		}
		kind := []string{"Echo", "Stream", "Collect", "fail"}[i%4]
		size := sz[i%n]
		var nb [8]byte
		rnd.Read(nb[:])
		nonce := hex.EncodeToString(nb[:])
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		ctx = metadata.AppendToOutgoingContext(ctx, "x-nonce", nonce, "x-call", kind)
		var r callResult
		switch kind {
		case "Echo":
			r = callEcho(ctx, conn, fmt.Sprintf("%s %d", nonce, size))
			r.checkResponse = func() error {
				if len(r.resps) != 1 || len(r.resps[0].Value) != size || !bytes.HasPrefix(r.resps[0].Value, []byte(nonce)[:min(size, len(nonce))]) {
					return errors.New("wrong response")
				}
				return nil
			}
		case "fail":
			r = callEcho(ctx, conn, nonce+" fail")
		case "Stream":
			const count = 3
			r = callStream(ctx, conn, &wrappers.BytesValue{Value: []byte(fmt.Sprintf("%s %d %d", nonce, size, count))})
			r.checkResponse = func() error {
				if len(r.resps) != count {
					return fmt.Errorf("%d responses, want %d", len(r.resps), count)
				}
				for _, v := range r.resps {
					if len(v.Value) != size {
						return fmt.Errorf("response of %d bytes, want %d", len(v.Value), size)
					}
				}
				return nil
			}
		case "Collect":
			var reqs []*wrappers.BytesValue
			var lens []string
			for j := 0; j < 3; j++ {
				l := sz[(i+j)%n]
				reqs = append(reqs, &wrappers.BytesValue{Value: payload(fmt.Sprintf("%s %d ", nonce, j), l)})
				lens = append(lens, strconv.Itoa(l))
			}
			r = callCollect(ctx, conn, reqs)
			want := strings.Join(lens, " ")
			r.checkResponse = func() error {
				if len(r.resps) != 1 || string(r.resps[0].Value) != want {
					return fmt.Errorf("wrong response, want %q", want)
				}
				return nil
			}
		}
		cancel()
		st := status.Convert(r.err)
		reqB64, respB64 := []string{}, []string{}
		for _, v := range r.reqs {
			reqB64 = append(reqB64, serialized(v))
		}
		var values [][]byte
		for _, v := range r.resps {
			respB64 = append(respB64, serialized(v))
			values = append(values, v.Value)
		}
		m.line(map[string]interface{}{"side": "client", "nonce": nonce, "method": r.method, "header": mdMap(r.header),
			"trailer": mdMap(r.trailer), "requests_b64": reqB64, "responses_b64": respB64,
			"status_code": int(st.Code()), "status_message": st.Message()})
		// Check the call behaved as designed.
		if r.checkResponse == nil {
			if st.Code() != codes.NotFound || st.Message() != "no such thing "+nonce {
				return fmt.Errorf("call %d (%s): want NotFound, got %v", i, kind, r.err)
			}
			continue
		}
		if r.err != nil {
			return fmt.Errorf("call %d (%s): %v", i, kind, r.err)
		}
		if err := r.checkResponse(); err != nil {
			return fmt.Errorf("call %d (%s): %v", i, kind, err)
		}
		if got := r.header.Get("x-nonce"); len(got) != 1 || got[0] != nonce {
			return fmt.Errorf("call %d (%s): header x-nonce %q, want %q", i, kind, got, nonce)
		}
		if got, want := r.trailer.Get("x-checksum"), checksum(values); len(got) != 1 || got[0] != want {
			return fmt.Errorf("call %d (%s): trailer x-checksum %q, want %q", i, kind, got, want)
		}
	}
	return nil
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func callEcho(ctx context.Context, conn *grpc.ClientConn, value string) callResult {
	r := callResult{method: "/" + service + "/Echo"}
	req := &wrappers.BytesValue{Value: []byte(value)}
	resp := new(wrappers.BytesValue)
	r.reqs = []*wrappers.BytesValue{req}
	r.err = conn.Invoke(ctx, r.method, req, resp, grpc.Header(&r.header), grpc.Trailer(&r.trailer))
	if r.err == nil {
		r.resps = []*wrappers.BytesValue{resp}
	}
	return r
}

// callStream calls Stream gzip-compressed (the server answers with the same compressor).
func callStream(ctx context.Context, conn *grpc.ClientConn, req *wrappers.BytesValue) callResult {
	r := callResult{method: "/" + service + "/Stream"}
	desc := &grpc.StreamDesc{StreamName: "Stream", ServerStreams: true}
	cs, err := conn.NewStream(ctx, desc, r.method, grpc.UseCompressor(gzip.Name))
	if err != nil {
		r.err = err
		return r
	}
	if r.err = cs.SendMsg(req); r.err == nil {
		r.reqs = append(r.reqs, req)
		r.err = cs.CloseSend()
	}
	if r.err == io.EOF { // the stream ended early: RecvMsg gives its status
		r.err = nil
	}
	for r.err == nil {
		resp := new(wrappers.BytesValue)
		if err := cs.RecvMsg(resp); err != nil {
			if err != io.EOF {
				r.err = err
			}
			break
		}
		r.resps = append(r.resps, resp)
	}
	r.header, _ = cs.Header()
	r.trailer = cs.Trailer()
	return r
}

func callCollect(ctx context.Context, conn *grpc.ClientConn, reqs []*wrappers.BytesValue) callResult {
	r := callResult{method: "/" + service + "/Collect"}
	desc := &grpc.StreamDesc{StreamName: "Collect", ClientStreams: true}
	cs, err := conn.NewStream(ctx, desc, r.method)
	if err != nil {
		r.err = err
		return r
	}
	for _, req := range reqs {
		if r.err = cs.SendMsg(req); r.err != nil {
			break
		}
		r.reqs = append(r.reqs, req)
	}
	if r.err == nil {
		r.err = cs.CloseSend()
	}
	if r.err == io.EOF { // the stream ended early: RecvMsg gives its status
		r.err = nil
	}
	if r.err == nil {
		resp := new(wrappers.BytesValue)
		if r.err = cs.RecvMsg(resp); r.err == nil {
			r.resps = append(r.resps, resp)
			// A client-streaming call has one response: RecvMsg then sees io.EOF and the status.
			extra := new(wrappers.BytesValue)
			if err := cs.RecvMsg(extra); err != io.EOF {
				if err == nil {
					err = errors.New("more than one response")
				}
				r.err = err
			}
		}
	}
	r.header, _ = cs.Header()
	r.trailer = cs.Trailer()
	return r
}
