package grant

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/tlsconf"
)

// OAuth2Config is provider p's registration for golang.org/x/oauth2. The
// client authenticates in the request body: installed-app and device
// clients are public or hold a non-confidential secret, and x/oauth2's
// auto-detection would send a failed request again in the other style,
// which a device-flow server counts as polling too fast.
func OAuth2Config(p *policy.Provider, redirectURL string) *oauth2.Config {
	o := p.OAuth2
	return &oauth2.Config{
		ClientID:     o.ClientID,
		ClientSecret: o.ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:       o.AuthURL,
			TokenURL:      o.TokenURL,
			DeviceAuthURL: o.DeviceAuthURL,
			AuthStyle:     oauth2.AuthStyleInParams,
		},
		RedirectURL: redirectURL,
		Scopes:      o.Scopes,
	}
}

// WithClient returns ctx carrying client for golang.org/x/oauth2's
// requests.
func WithClient(ctx context.Context, client *http.Client) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, client)
}

// Tokens gives the access tokens of OAuth2 logins (proxy.Grants). Access
// tokens live in memory only. One account's logins take turns (a lock per
// account), so that concurrent logins make one refresh, and a rotated
// refresh token is written back once, atomically.
type Tokens struct {
	Store  *Store
	Dialer *tlsconf.Dialer
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu       sync.Mutex
	accounts map[string]*account
	pepper   []byte // keys the in-memory password check
}

var _ proxy.Grants = (*Tokens)(nil)

// account is what memory holds for one account: the access token last
// fetched while it is valid, with an HMAC of the local password that
// unlocked it (under a random key of this process) and a hash of the
// record it came from, so that a login within the token's lifetime costs
// no key derivation, and a record replaced (`mailproxy authorize` with
// another password) or removed takes effect at once; and the sealed text
// of a grant the provider revoked, so that it is not sent again.
type account struct {
	// turn is held by the one login of the account that is running; the
	// others wait for it no longer than their own deadline.
	turn     chan struct{}
	access   proxy.Secret
	expiry   time.Time
	password [sha256.Size]byte
	record   [sha256.Size]byte
	revoked  [sha256.Size]byte
	// unsaved is a record holding a rotated refresh token that could not
	// be written (a full disk, a read-only folder), in place of the one
	// on disk whose sealed text hashes to unsavedOver; it is used, and
	// written again, while the disk still holds that one.
	unsaved     *Record
	unsavedOver [sha256.Size]byte
	// failures counts wrong local passwords in a row; from the
	// freeFailures-th on, no password is tried before retryAt.
	failures int
	retryAt  time.Time
	// refused holds HMACs of the last wrong passwords for the record
	// whose sealed text hashes to refusedFor: an app that keeps sending
	// an old password is refused at once, without a key derivation and
	// without pushing the back-off further for everyone else.
	refused    [recentRefused][sha256.Size]byte
	nRefused   int
	refusedFor [sha256.Size]byte
}

// recentRefused is how many distinct wrong passwords an account remembers.
const recentRefused = 8

// lock takes the account's turn, waiting no longer than ctx allows.
func (a *account) lock(ctx context.Context) bool {
	select {
	case a.turn <- struct{}{}:
		return true
	default:
	}
	select {
	case a.turn <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (a *account) unlock() { <-a.turn }

// wasRefused reports whether pw was refused lately for the record cur.
func (a *account) wasRefused(pw, cur [sha256.Size]byte) bool {
	if a.refusedFor != cur {
		a.nRefused, a.refusedFor = 0, cur
		return false
	}
	for _, r := range a.refused[:min(a.nRefused, recentRefused)] {
		if hmac.Equal(r[:], pw[:]) {
			return true
		}
	}
	return false
}

func (a *account) refuse(pw [sha256.Size]byte) {
	a.refused[a.nRefused%recentRefused] = pw
	a.nRefused++
}

// The back-off after wrong local passwords: the password is all that
// protects the stored grant, and each try costs a key derivation (64 MiB,
// most of a second of CPU), so a program guessing through many sessions
// gets one guess per backOffMax once it has made freeFailures. A login
// whose access token is still cached and whose password matches it is
// not delayed, so the user's own apps keep working meanwhile.
const (
	freeFailures = 3
	backOffMax   = time.Minute
)

// kdfSlots bounds the key derivations running at once, whatever the
// number of accounts: each holds the record's Argon2id memory (64 MiB by
// default) for most of a second, so the sum is what must be bounded.
var kdfSlots = make(chan struct{}, 2)

// errNoSlot is a login that ran out of time waiting for a key derivation.
var errNoSlot = errors.New("too many logins are checking local passwords at once; try again")

// testHookDerive, when set (by tests), runs in a slot before each
// derivation.
var testHookDerive func()

// derive derives rec's key from password in one of kdfSlots, waiting for
// one no longer than ctx allows.
func derive(ctx context.Context, rec *Record, password proxy.Secret) (Key, error) {
	if ctx.Err() != nil { // select would pick a free slot at random
		return Key{}, errNoSlot
	}
	select {
	case kdfSlots <- struct{}{}:
	case <-ctx.Done():
		return Key{}, errNoSlot
	}
	defer func() { <-kdfSlots }()
	if testHookDerive != nil {
		testHookDerive()
	}
	return rec.DeriveKey(password.Reveal()), nil
}

func backOff(failures int) time.Duration {
	if failures < freeFailures {
		return 0
	}
	return min(time.Second<<min(failures-freeFailures, 6), backOffMax)
}

// expiryMargin is how long before its expiry a token is no longer used.
const expiryMargin = time.Minute

// unknownLifetime is how long a token is used when the provider did not
// say how long it lasts.
const unknownLifetime = 5 * time.Minute

func (t *Tokens) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// noGrant is the answer for an account with no stored grant.
func noGrant(provider, user string) error {
	return &proxy.AuthError{Text: fmt.Sprintf("mailproxy holds no OAuth2 authorization for %s at %s: %s", user, provider, authorizeHint(provider, user))}
}

// account returns what memory holds for user at provider; with create
// false, nil when nothing is held.
func (t *Tokens) account(provider, user string, create bool) (*account, []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.accounts == nil {
		t.accounts = map[string]*account{}
		t.pepper = make([]byte, 32)
		rand.Read(t.pepper)
	}
	k := provider + "\x00" + user
	a := t.accounts[k]
	if a == nil && create {
		a = &account{turn: make(chan struct{}, 1)}
		t.accounts[k] = a
	}
	return a, t.pepper
}

func mac(pepper []byte, s string) [sha256.Size]byte {
	m := hmac.New(sha256.New, pepper)
	m.Write([]byte(s))
	var out [sha256.Size]byte
	copy(out[:], m.Sum(nil))
	return out
}

// authorizeHint tells the app to run `mailproxy authorize` for its account.
func authorizeHint(p, account string) string {
	return fmt.Sprintf("run `mailproxy authorize -provider %s %s`", p, account)
}

// AccessToken implements proxy.Grants.
func (t *Tokens) AccessToken(ctx context.Context, route policy.Route, password proxy.Secret, audit *policy.SessionAudit) (proxy.Secret, error) {
	p, user := route.Provider, route.User
	// Only an account with a record is remembered: an app that tries one
	// user name after another must not grow the map.
	if _, err := os.Stat(t.Store.path(p.Name, user)); errors.Is(err, fs.ErrNotExist) {
		return proxy.Secret{}, noGrant(p.Name, user)
	}
	a, pepper := t.account(p.Name, user, true)
	if !a.lock(ctx) {
		// Another login of the account holds its turn (a token endpoint
		// that stalls): this one gives up in time, as a temporary failure.
		audit.Denied(policy.Deny(policy.ReasonLimit, "", "a login for %s waited for the account's other login until its time ran out", policy.Escape(user)))
		return proxy.Secret{}, &proxy.BusyError{Text: "another login for this account is still waiting for the provider's token endpoint; try again"}
	}
	defer a.unlock()
	pw := mac(pepper, password.Reveal())
	now := t.now()
	rec, err := t.Store.Load(p.Name, user)
	if errors.Is(err, fs.ErrNotExist) {
		return proxy.Secret{}, noGrant(p.Name, user)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return proxy.Secret{}, fmt.Errorf("reading the grant of %s: %w", user, err)
	}
	if err != nil {
		// Not a record (damaged, or written by something else): only a
		// new authorization helps.
		return proxy.Secret{}, &proxy.AuthError{Text: fmt.Sprintf("mailproxy's stored authorization for %s is damaged (%v): %s", user, err, authorizeHint(p.Name, user))}
	}
	// onDisk is the record on disk; cur the one in use, which differs
	// while memory holds a rotated grant the disk refused.
	onDisk := sha256.Sum256(rec.Sealed)
	cur := onDisk
	if a.unsaved != nil {
		if onDisk == a.unsavedOver {
			// The rotated grant only memory holds is the current one.
			rec, cur = a.unsaved, sha256.Sum256(a.unsaved.Sealed)
			if t.Store.saveOver(rec, onDisk) == nil {
				a.unsaved, onDisk = nil, cur
			}
		} else {
			a.unsaved = nil // authorized again, or removed, since
		}
	}
	// The password that last opened this record.
	known := hmac.Equal(pw[:], a.password[:]) && cur == a.record
	if a.access != (proxy.Secret{}) && now.Before(a.expiry) && known {
		return a.access, nil
	}
	if a.wasRefused(pw, cur) {
		return proxy.Secret{}, &proxy.AuthError{Text: "authentication failed: wrong user name or local password"}
	}
	// The back-off holds up guesses, not the password known to be right
	// (whoever sends it needs no guessing).
	if now.Before(a.retryAt) && !known {
		wait := a.retryAt.Sub(now).Round(time.Second) + time.Second
		audit.Denied(policy.Deny(policy.ReasonLimit, "", "%d wrong local passwords in a row for %s: no password is tried for %s", a.failures, policy.Escape(user), wait))
		return proxy.Secret{}, &proxy.AuthError{Text: fmt.Sprintf("authentication failed: too many wrong local passwords for this account; try again in %s", wait)}
	}
	key, err := derive(ctx, rec, password)
	if err != nil {
		audit.Denied(policy.Deny(policy.ReasonLimit, "", "the local password of %s was not checked: %v", policy.Escape(user), err))
		return proxy.Secret{}, &proxy.BusyError{Text: err.Error()}
	}
	refresh, err := rec.Open(key)
	if errors.Is(err, ErrWrongPassword) {
		a.failures++
		a.retryAt = now.Add(backOff(a.failures))
		a.refuse(pw)
		return proxy.Secret{}, &proxy.AuthError{Text: "authentication failed: wrong user name or local password"}
	}
	if !known {
		// A password that had to be checked: the guessing, if any, is
		// over. The known one resets nothing, so that a program guessing
		// beside the user's own apps stays held up.
		a.failures, a.retryAt = 0, time.Time{}
	}
	if err != nil {
		return proxy.Secret{}, err
	}
	revoked := &proxy.AuthError{Text: fmt.Sprintf("the provider no longer accepts mailproxy's authorization for %s: %s", user, authorizeHint(p.Name, user))}
	if cur == a.revoked {
		audit.OAuth2Token(p.Name, user, policy.TokenRevoked, 0)
		return proxy.Secret{}, revoked
	}
	cfg := OAuth2Config(p, "")
	hctx := WithClient(ctx, t.Dialer.HTTPClient(p, audit.As(policy.HTTPS)))
	tok, err := cfg.TokenSource(hctx, &oauth2.Token{RefreshToken: refresh}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode == "invalid_grant" {
			// RFC 6749 §5.2: the refresh token is invalid, expired or
			// revoked. Only a new authorization helps.
			a.revoked = cur
			a.access = proxy.Secret{}
			audit.OAuth2Token(p.Name, user, policy.TokenRevoked, 0)
			return proxy.Secret{}, revoked
		}
		audit.OAuth2Token(p.Name, user, policy.TokenFailed, 0)
		return proxy.Secret{}, tokenError("refused to refresh the grant", err)
	}
	if !proxy.ValidBearerToken(tok.AccessToken) || (tok.Type() != "Bearer") {
		audit.OAuth2Token(p.Name, user, policy.TokenFailed, 0)
		return proxy.Secret{}, &proxy.ProviderError{Msg: "the provider's token endpoint answered with no usable bearer token"}
	}
	rotated := tok.RefreshToken != "" && tok.RefreshToken != refresh
	next := refresh
	if rotated {
		next = tok.RefreshToken
	}
	// Written back at every refresh (the refreshed time is in the record's
	// sealed header); a rotated refresh token must be, or the grant is lost.
	if err := rec.Reseal(key, next, now); err != nil {
		// Only a refresh token longer than a record holds gets here.
		audit.OAuth2Token(p.Name, user, policy.TokenFailed, 0)
		return proxy.Secret{}, &proxy.ProviderError{Msg: fmt.Sprintf("the provider's token endpoint issued a refresh token mailproxy cannot store (%v): run `mailproxy authorize` again", err)}
	}
	usedUnsaved := a.unsaved != nil
	switch err := t.Store.saveOver(rec, onDisk); {
	case errors.Is(err, errReplaced):
		// `mailproxy authorize` or `tokens remove` changed the record
		// while this login refreshed the old grant: theirs stands. This
		// login goes on; nothing of the old grant is kept.
		a.unsaved, a.access = nil, proxy.Secret{}
		audit.OAuth2TokenNotStored(p.Name, user, tok.ExpiresIn, false, err)
		return proxy.NewSecret(tok.AccessToken), nil
	case err != nil:
		// The token is good, so the login goes on. A rotated refresh
		// token is the grant now (the provider may have retired the old
		// one): memory keeps it, over the record still on disk, and every
		// login tries to write it again (a restart before that loses it,
		// and says so in the audit). Without a rotation the record on
		// disk still holds the grant, and the cache is keyed to it.
		if rotated || usedUnsaved {
			a.unsaved, a.unsavedOver = rec, onDisk
			a.record = sha256.Sum256(rec.Sealed)
		} else {
			a.record = onDisk
		}
		audit.OAuth2TokenNotStored(p.Name, user, tok.ExpiresIn, rotated || usedUnsaved, err)
	default:
		a.unsaved = nil
		a.record = sha256.Sum256(rec.Sealed)
		audit.OAuth2Token(p.Name, user, policy.TokenRefreshed, tok.ExpiresIn)
	}
	a.access = proxy.NewSecret(tok.AccessToken)
	a.password = pw
	a.expiry = tok.Expiry.Add(-expiryMargin)
	if life := tok.Expiry.Sub(now); tok.Expiry.IsZero() {
		a.expiry = now.Add(unknownLifetime)
	} else if life <= 2*expiryMargin {
		// A short-lived token is still cached for half its life; one
		// already expired (expires_in of 0 or less) is not cached.
		a.expiry = now.Add(life / 2)
	}
	return a.access, nil
}

// tokenError words a failed token request without what the endpoint
// answered (which x/oauth2 quotes whole): the error code and status only.
func tokenError(what string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		code := re.ErrorCode
		if code == "" {
			code = "no error code"
		}
		status := ""
		if re.Response != nil {
			status = re.Response.Status
		}
		return &proxy.ProviderError{Msg: fmt.Sprintf("the provider's token endpoint %s (%s, %s)", what, proxy.Printable(code, 60), proxy.Printable(status, 60))}
	}
	// The request did not get through (refused by the policy, unreachable,
	// timed out). *url.Error's text quotes the configured URL whole, query
	// included (a careless token_url may carry a secret there): only its
	// host is named, and the cause kept for errors.As.
	var ue *url.Error
	if errors.As(err, &ue) {
		host := "?"
		if u, perr := url.Parse(ue.URL); perr == nil {
			host = u.Host
		}
		return fmt.Errorf("the provider's token endpoint %s: %w", host, ue.Err)
	}
	// Anything else is x/oauth2 failing to read a successful answer, and
	// its text may quote part of the answer (a JSON error names a number
	// it found where a token was due): not shown.
	return &proxy.ProviderError{Msg: fmt.Sprintf("the provider's token endpoint %s: its answer could not be read as a token response", what)}
}

// Rejected implements proxy.Grants: the provider refused token, so the
// next login fetches a new one.
func (t *Tokens) Rejected(route policy.Route, token proxy.Secret) {
	a, _ := t.account(route.Provider.Name, route.User, false)
	if a == nil {
		return
	}
	a.turn <- struct{}{}
	defer a.unlock()
	if a.access == token {
		a.access = proxy.Secret{}
	}
}
