// Command etcd is the etcd server (go.etcd.io/etcd/server/v3), built as a
// wrapper module because `go install` refuses modules with replace directives.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
