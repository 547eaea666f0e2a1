// Package proxytest runs mailproxy listeners in-process for the fronts'
// tests, in front of fake providers that trust a testkit.PKI.
package proxytest

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/tlsconf"
)

// Provider returns a provider on 127.0.0.1 that trusts the PKI, with the
// given endpoint URLs.
func Provider(p *testkit.PKI, name string, endpoints ...string) *policy.Provider {
	pr := &policy.Provider{
		Name:                  name,
		Hosts:                 []string{"127.0.0.1", "localhost"},
		Domains:               []string{name + ".test"},
		Endpoints:             map[policy.Proto]policy.Endpoint{},
		TLS:                   policy.TLSPolicy{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13, Roots: p.CA.Pool()},
		AllowPrivateAddresses: true,
	}
	for _, e := range endpoints {
		ep, err := policy.ParseEndpoint(e)
		if err != nil {
			panic(err)
		}
		pr.Endpoints[ep.Proto] = ep
	}
	return pr
}

// Proxy is an in-process mailproxy listener.
type Proxy struct {
	Addr     string
	Audit    *testkit.Audit
	Listener *proxy.Listener
}

// ProxyOptions adjust the listener's settings before it starts.
type ProxyOptions func(*proxy.Settings)

// StartProxy runs a listener for proto on 127.0.0.1 in front of provider
// (nil: route by login domain among providers). It stops with the test.
func StartProxy(t testing.TB, front proxy.Front, proto policy.Proto, provider *policy.Provider, providers []*policy.Provider, opts ...ProxyOptions) *Proxy {
	t.Helper()
	if provider != nil && providers == nil {
		providers = []*policy.Provider{provider}
	}
	st := &proxy.Settings{
		Listen: proxy.ListenSpec{Proto: proto, Address: "127.0.0.1:0", Provider: provider,
			Access: policy.Access{Loopback: true}},
		Providers: providers,
	}
	for _, o := range opts {
		o(st)
	}
	a := &testkit.Audit{}
	l := proxy.NewListener(front, policy.NewAudit(a, 0), &tlsconf.Dialer{Timeout: 10 * time.Second}, st)
	if err := l.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { l.Serve(context.Background()); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l.Shutdown(ctx)
		<-done
	})
	return &Proxy{Addr: l.Addr().String(), Audit: a, Listener: l}
}
