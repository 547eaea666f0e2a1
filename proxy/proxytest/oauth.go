package proxytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"mailproxy/grant"
	"mailproxy/internal/authserver"
	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/tlsconf"
)

// OAuth is an authorization server for an OAuth2 provider, and a token
// store holding one account's grant sealed with a local password.
type OAuth struct {
	Server  *authserver.Server
	Store   *grant.Store
	Tokens  *grant.Tokens
	Account string
	Local   string // the local password
}

// StartOAuth makes p an OAuth2 provider served by a new authorization
// server, and stores a grant for account under local. Key derivation is
// cheap here; the defaults are tested in package grant.
func StartOAuth(t testing.TB, pki *testkit.PKI, p *policy.Provider, account, local string) *OAuth {
	t.Helper()
	as, err := authserver.Start(pki.Cert, "mailproxy-test", "", account)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.Close)
	p.OAuth2 = &policy.OAuth2{ClientID: "mailproxy-test", AuthURL: as.URL + "/authorize", TokenURL: as.URL + "/token", Scopes: []string{"mail"}}
	st := &grant.Store{Dir: filepath.Join(t.TempDir(), "tokens")}
	r, _, err := grant.Seal(p.Name, account, as.IssueRefresh(account), local, grant.KDF{Time: 1, MemoryKiB: 64, Threads: 1}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Save(r); err != nil {
		t.Fatal(err)
	}
	return &OAuth{Server: as, Store: st, Tokens: &grant.Tokens{Store: st, Dialer: &tlsconf.Dialer{Timeout: 10 * time.Second}},
		Account: account, Local: local}
}

// Option gives a listener the grants.
func (o *OAuth) Option() ProxyOptions {
	return func(s *proxy.Settings) { s.Grants = o.Tokens }
}

// Secrets are every token, code and the local password, for secret scans.
func (o *OAuth) Secrets() []string { return append(o.Server.Secrets(), o.Local) }

// ParseOAuth reads a client's XOAUTH2 or OAUTHBEARER initial response, as
// a provider does.
func ParseOAuth(mech string, ir []byte) (user, token string, err error) {
	bad := errors.New("malformed " + mech + " response")
	s := string(ir)
	if mech == proxy.MechOAUTHBEARER {
		gs2, rest, ok := strings.Cut(s, "\x01")
		if !ok || !strings.HasPrefix(gs2, "n,a=") || !strings.HasSuffix(gs2, ",") {
			return "", "", bad
		}
		user = strings.NewReplacer("=2C", ",", "=3D", "=").Replace(gs2[4 : len(gs2)-1])
		s = rest
	} else {
		u, rest, ok := strings.Cut(s, "\x01")
		if !ok || !strings.HasPrefix(u, "user=") {
			return "", "", bad
		}
		user, s = u[5:], rest
	}
	auth, rest, ok := strings.Cut(s, "\x01")
	if !ok || rest != "\x01" || !strings.HasPrefix(auth, "auth=Bearer ") {
		return "", "", bad
	}
	return user, auth[len("auth=Bearer "):], nil
}

// OAuthServer is a provider's side of XOAUTH2 or OAUTHBEARER: check
// decides; a refusal is sent as a JSON error challenge, and the exchange
// ends with fail once the client answered it as the mechanism says.
func OAuthServer(mech string, check func(user, token string) error, fail error) sasl.Server {
	return &oauthServer{mech: mech, check: check, fail: fail}
}

type oauthServer struct {
	mech  string
	check func(user, token string) error
	fail  error
	step  int
}

func (s *oauthServer) Next(resp []byte) ([]byte, bool, error) {
	switch s.step {
	case 0:
		if resp == nil {
			s.step = 1
			return []byte{}, false, nil
		}
		fallthrough
	case 1:
		user, token, err := ParseOAuth(s.mech, resp)
		if err == nil {
			if err = s.check(user, token); err == nil {
				s.step = 3
				return nil, true, nil
			}
		}
		s.step = 2
		ch, _ := json.Marshal(map[string]string{"status": "invalid_token", "schemes": "bearer", "scope": "mail"})
		return ch, false, nil
	case 2:
		s.step = 3
		if !bytes.Equal(resp, proxy.OAuthFailureAnswer(s.mech)) {
			return nil, true, errors.New("the client answered the error challenge wrongly")
		}
		return nil, true, s.fail
	}
	return nil, true, errors.New("unexpected response")
}
