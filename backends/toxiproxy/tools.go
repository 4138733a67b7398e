//go:build tools

// Package tools records the command this wrapper module builds, so that
// `go mod tidy` keeps its dependencies in go.mod and go.sum. The tools build
// tag keeps it out of every real build: a main package cannot be imported,
// only built by path (`go build github.com/Shopify/toxiproxy/v2/cmd/server`).
package tools

import _ "github.com/Shopify/toxiproxy/v2/cmd/server"
