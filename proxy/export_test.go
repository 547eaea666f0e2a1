package proxy

// SetLoginHook sets the hook run at the start of every login's provider
// exchange, for tests that force a panic there; it returns a function that
// removes it.
func SetLoginHook(f func()) func() {
	loginHook = f
	return func() { loginHook = nil }
}
