package webhook

// Control is the dialer's last check, for tests.
func (p Policy) Control(network, address string) error { return p.control(network, address, nil) }
