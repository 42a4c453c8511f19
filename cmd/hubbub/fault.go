package main

// faultInjector is nil in every normal build. A build with the hubbubfault
// tag (fault_inject.go, used only by the end-to-end tests) sets it, so the
// production binary has no way to inject a fault.
var faultInjector func(kind string, msg any)
