// Package policy holds mailproxy's decisions: which providers exist and which
// hosts each one may be reached at, how a login is routed to a provider,
// which resolved addresses may be dialled, and the audit events that record
// every one of those decisions.
//
// The package performs no I/O of its own beyond writing audit events to the
// writer it is given. It never sees a password, token or message: no function
// here takes one, so none can reach an audit event.
package policy
