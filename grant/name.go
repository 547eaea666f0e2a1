package grant

// CheckName refuses an account or provider name that a record could not
// hold (Seal refuses it too), so that a command can refuse it before it
// asks the provider for a grant that would then be thrown away.
func CheckName(name string) error { return checkName(name) }
