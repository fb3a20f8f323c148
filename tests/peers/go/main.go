// go-peer: an independent SPIFFE Workload API client on go-spiffe v2, driven by pyspire's
// interop tests. It talks to the agent named by SPIFFE_ENDPOINT_SOCKET and prints one JSON
// object per line on stdout, so the tests read what go-spiffe saw, not what pyspire thinks.
//
//	go-peer x509 [-updates N] [-timeout S]     X509Source: one line per update (rotation)
//	go-peer jwt -audience A [-spiffe-id ID]    JWTSource: fetch, then validate with its bundles
//	go-peer validate -audience A -token T      the Workload API's ValidateJWTSVID
//	go-peer serve -authorize ID|td:TD [-connections N]   an mTLS server (tlsconfig)
//	go-peer dial -address HOST:PORT -authorize ID|td:TD  an mTLS client (tlsconfig)
//
// A failure prints {"error": "..."} and exits 1.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func emit(value map[string]any) {
	line, err := json.Marshal(value)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(line))
}

func fail(err error) {
	emit(map[string]any{"error": err.Error()})
	os.Exit(1)
}

// authorizer reads "td:example.org" as any member of that trust domain, anything else as one exact ID.
func authorizer(spec string) (tlsconfig.Authorizer, error) {
	if name, ok := strings.CutPrefix(spec, "td:"); ok {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return nil, err
		}
		return tlsconfig.AuthorizeMemberOf(td), nil
	}
	id, err := spiffeid.FromString(spec)
	if err != nil {
		return nil, err
	}
	return tlsconfig.AuthorizeID(id), nil
}

func describeX509(source *workloadapi.X509Source) map[string]any {
	svid, err := source.GetX509SVID()
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	_, chains, err := x509svid.Verify(svid.Certificates, source)
	verified := err == nil && len(chains) > 0
	leaf := svid.Certificates[0]
	bundle, err := source.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	authorities := 0
	if err == nil {
		authorities = len(bundle.X509Authorities())
	}
	return map[string]any{
		"spiffe_id":          svid.ID.String(),
		"hint":               svid.Hint,
		"serial":             leaf.SerialNumber.String(),
		"not_after":          leaf.NotAfter.Unix(),
		"chain_length":       len(svid.Certificates),
		"verified":           verified,
		"bundle_authorities": authorities,
	}
}

func runX509(ctx context.Context, args []string) {
	flags := flag.NewFlagSet("x509", flag.ExitOnError)
	updates := flags.Int("updates", 1, "updates to report before exiting")
	timeout := flags.Int("timeout", 30, "give up after this many seconds")
	_ = flags.Parse(args)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(*timeout)*time.Second)
	defer cancel()
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		fail(err)
	}
	defer source.Close()
	last := ""
	for seen := 0; seen < *updates; {
		current := describeX509(source)
		if serial := fmt.Sprint(current["serial"], current["bundle_authorities"]); serial != last {
			emit(current)
			last = serial
			seen++
			if seen == *updates {
				break
			}
		}
		select {
		case <-source.Updated():
		case <-ctx.Done():
			fail(fmt.Errorf("%d of %d X.509 updates seen: %w", seen, *updates, ctx.Err()))
		}
	}
}

func runJWT(ctx context.Context, args []string) {
	flags := flag.NewFlagSet("jwt", flag.ExitOnError)
	audience := flags.String("audience", "", "the audience asked for")
	subject := flags.String("spiffe-id", "", "the SPIFFE ID asked for (default: the agent's first)")
	_ = flags.Parse(args)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	source, err := workloadapi.NewJWTSource(ctx)
	if err != nil {
		fail(err)
	}
	defer source.Close()
	params := jwtsvid.Params{Audience: *audience}
	if *subject != "" {
		id, err := spiffeid.FromString(*subject)
		if err != nil {
			fail(err)
		}
		params.Subject = id
	}
	svid, err := source.FetchJWTSVID(ctx, params)
	if err != nil {
		fail(err)
	}
	token := svid.Marshal()
	validated, err := jwtsvid.ParseAndValidate(token, source, []string{*audience})
	if err != nil {
		fail(fmt.Errorf("go-spiffe refuses the JWT-SVID it was given: %w", err))
	}
	emit(map[string]any{
		"spiffe_id":         svid.ID.String(),
		"token":             token,
		"audience":          validated.Audience,
		"expiry":            validated.Expiry.Unix(),
		"validated_locally": validated.ID.String(),
	})
}

func runValidate(ctx context.Context, args []string) {
	flags := flag.NewFlagSet("validate", flag.ExitOnError)
	audience := flags.String("audience", "", "the audience expected")
	token := flags.String("token", "", "the JWT-SVID")
	_ = flags.Parse(args)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	svid, err := workloadapi.ValidateJWTSVID(ctx, *token, *audience)
	if err != nil {
		fail(err)
	}
	keys := make([]string, 0, len(svid.Claims))
	for key := range svid.Claims {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	emit(map[string]any{"spiffe_id": svid.ID.String(), "audience": svid.Audience, "claims": keys})
}

func runServe(ctx context.Context, args []string) {
	flags := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := flags.String("listen", "127.0.0.1:0", "address to listen on")
	authorize := flags.String("authorize", "", "client allowed: a SPIFFE ID or td:<trust domain>")
	connections := flags.Int("connections", 1, "connections to answer before exiting")
	_ = flags.Parse(args)
	allowed, err := authorizer(*authorize)
	if err != nil {
		fail(err)
	}
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		fail(err)
	}
	defer source.Close()
	own, err := source.GetX509SVID()
	if err != nil {
		fail(err)
	}
	listener, err := tls.Listen("tcp", *listen, tlsconfig.MTLSServerConfig(source, source, allowed))
	if err != nil {
		fail(err)
	}
	defer listener.Close()
	emit(map[string]any{"listening": listener.Addr().String(), "spiffe_id": own.ID.String()})
	for answered := 0; answered < *connections; answered++ {
		conn, err := listener.Accept()
		if err != nil {
			fail(err)
		}
		serveOne(conn, source)
	}
}

// peerID completes the handshake (TLS 1.3 may finish it only at the first read) and reads the peer's SPIFFE ID.
func peerID(conn *tls.Conn) (spiffeid.ID, error) {
	if err := conn.Handshake(); err != nil {
		return spiffeid.ID{}, err
	}
	return spiffetls.PeerIDFromConnectionState(conn.ConnectionState())
}

func serveOne(conn net.Conn, source *workloadapi.X509Source) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	peer, err := peerID(conn.(*tls.Conn))
	if err != nil {
		emit(map[string]any{"refused": err.Error()})
		return
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		emit(map[string]any{"refused": err.Error()})
		return
	}
	own, _ := source.GetX509SVID()
	_, _ = fmt.Fprintf(conn, "%s answers %s: %s\n", own.ID, peer, strings.TrimSpace(line))
	emit(map[string]any{"client": peer.String(), "said": strings.TrimSpace(line)})
}

func runDial(ctx context.Context, args []string) {
	flags := flag.NewFlagSet("dial", flag.ExitOnError)
	address := flags.String("address", "", "HOST:PORT of the server")
	authorize := flags.String("authorize", "", "server allowed: a SPIFFE ID or td:<trust domain>")
	message := flags.String("message", "ping", "what to say")
	_ = flags.Parse(args)
	allowed, err := authorizer(*authorize)
	if err != nil {
		fail(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		fail(err)
	}
	defer source.Close()
	dialer := &tls.Dialer{Config: tlsconfig.MTLSClientConfig(source, source, allowed)}
	conn, err := dialer.DialContext(ctx, "tcp", *address)
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	server, err := peerID(conn.(*tls.Conn))
	if err != nil {
		fail(err)
	}
	if _, err := fmt.Fprintf(conn, "%s\n", *message); err != nil {
		fail(err)
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		fail(err)
	}
	emit(map[string]any{"server": server.String(), "reply": strings.TrimSpace(reply)})
}

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: go-peer x509|jwt|validate|serve|dial [flags]"))
	}
	ctx := context.Background()
	commands := map[string]func(context.Context, []string){
		"x509": runX509, "jwt": runJWT, "validate": runValidate, "serve": runServe, "dial": runDial,
	}
	run, ok := commands[os.Args[1]]
	if !ok {
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
	run(ctx, os.Args[2:])
}
