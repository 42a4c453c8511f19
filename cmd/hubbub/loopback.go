package main

import (
	"fmt"
	"net"
	"net/url"
)

// loopbackOnly refuses load-test targets that are not on this machine.
func loopbackOnly(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s is not a loopback address: load tests run against 127.0.0.1 or ::1 only", host)
}
