package grant

// Remembered is how many accounts t holds in memory (for tests).
func (t *Tokens) Remembered() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.accounts)
}

// FailSaves makes every Store.Save fail with err until the returned
// function is called.
func FailSaves(err error) (restore func()) {
	testHookSave = func() error { return err }
	return func() { testHookSave = nil }
}

// OnDerive runs f in a key-derivation slot before each derivation until
// the returned function is called; KDFSlots is how many there are.
func OnDerive(f func()) (restore func()) {
	testHookDerive = f
	return func() { testHookDerive = nil }
}

var KDFSlots = cap(kdfSlots)
