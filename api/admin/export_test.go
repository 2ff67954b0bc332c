package admin

// SetRebuildHook sets the function rebuild-read-model calls at each phase
// ("copied", "locked") for the test's duration.
func SetRebuildHook(h func(phase string)) (restore func()) {
	old := rebuildHook
	rebuildHook = h
	return func() { rebuildHook = old }
}
