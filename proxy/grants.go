package proxy

import (
	"context"

	"mailproxy/policy"
)

// OAuth2 logins (docs/design.md, "OAuth2 logins"). A provider with
// [provider.oauth2] never sees the app's password: the password is the
// local one that unlocks the account's stored grant, and the login at the
// provider carries an access token instead (XOAUTH2 or OAUTHBEARER).

// Grants gives access tokens for the accounts of OAuth2 providers. Package
// grant implements it over the encrypted token store.
type Grants interface {
	// AccessToken returns an access token for route's account (route.User
	// at route.Provider), unlocking its grant with password: from memory
	// while a token fetched earlier is still valid, else from the token
	// endpoint (dialled under the provider's policy, audited on audit). A
	// login mailproxy refuses itself (a wrong local password, no grant, a
	// revoked grant) is an *AuthError; one it could not check in time is
	// a *BusyError; anything else kept it from getting a token (the token
	// endpoint unreachable or refused by the policy).
	AccessToken(ctx context.Context, route policy.Route, password Secret, audit *policy.SessionAudit) (Secret, error)
	// Rejected says that the provider refused token for route's account,
	// so that it is not used again.
	Rejected(route policy.Route, token Secret)
}

// AuthError is a login that mailproxy refused on the provider's behalf:
// audited as auth result=fail; the app gets the protocol's authentication
// failure with Text (which names no secret).
type AuthError struct{ Text string }

func (e *AuthError) Error() string { return e.Text }

// BusyError is a login mailproxy could not check in time because others
// held what it needed (the key-derivation slots, the account's turn): the
// app gets the protocol's temporary failure with Text, so that it tries
// again rather than asks the user for another password.
type BusyError struct{ Text string }

func (e *BusyError) Error() string { return e.Text }
