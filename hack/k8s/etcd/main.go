// Command etcd is upstream etcd's server, built from the module proxy at the
// version kubernetes v1.37.2 requires.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
