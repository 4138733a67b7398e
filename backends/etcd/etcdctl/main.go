// Command etcdctl is etcd's command-line client (go.etcd.io/etcd/etcdctl/v3),
// built here for the same reason as ../etcd.
package main

import (
	"go.etcd.io/etcd/etcdctl/v3/ctlv3"
)

func main() {
	ctlv3.MustStart()
}
