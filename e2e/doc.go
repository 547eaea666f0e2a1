// Package e2e is mailproxy's end-to-end suite: real mail clients (curl,
// swaks, Python's imaplib, fetchmail, mbsync) talk plaintext to a real
// `mailproxy run` on 127.0.0.1, and mailproxy talks TLS to a real provider
// the suite runs privately on 127.0.0.1 (Dovecot, Postfix, HAProxy), built
// from configuration files that provider.sh writes into a temporary folder.
//
// The tests are behind the build tag `e2e`, so `go test ./...` skips them:
//
//	go test -tags e2e -count=1 -v ./e2e/
//
// They need root, the Debian packages listed in README.md, and nothing
// running: every server is started by the suite as its own child and
// stopped by pid when the suite ends, also when a test fails. Nothing
// connects anywhere but 127.0.0.1.
//
// This file holds no code; it exists so that the package has a
// documentation and builds without the tag.
package e2e
