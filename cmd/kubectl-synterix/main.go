// Command kubectl-synterix is the kubectl plugin of synterix-kube-proxy
// ("kubectl synterix"): the nodes' and rollouts' state in one table, a
// Service explained on a node in plain words, a packet traced through a
// node's real rules, and each node's kernel compared with what its agent
// programmed. It reads the ProxyNodes and GatewayConfigs from the API
// server, and asks the agents (their /debug/synterix/ endpoint) through
// the API server's pods/proxy, or directly with --direct.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	cmd := newRoot(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}

// options are the flags every command shares.
type options struct {
	config *genericclioptions.ConfigFlags
	io     genericiooptions.IOStreams
	// output is "", json or yaml.
	output string
	// operatorNamespace holds the agents' pods and the explain
	// ServiceAccount.
	operatorNamespace string
	serviceAccount    string
	agentToken        string
	direct            bool
	agentPort         int
	// now is the clock of ages ("3s ago").
	now func() time.Time
}

// newRoot builds the command tree.
func newRoot(streams genericiooptions.IOStreams) *cobra.Command {
	o := &options{config: genericclioptions.NewConfigFlags(true), io: streams, now: time.Now}
	root := &cobra.Command{
		Use:   "kubectl-synterix",
		Short: "See and explain what synterix-kube-proxy programmed on the nodes",
		Long: `kubectl synterix shows the nodes' proxy state, explains a Service on a node,
traces a packet through a node's real rules, and compares each node's kernel
with what its agent programmed.

The agents answer on their secure metrics port (/debug/synterix/), reached
through the API server (pods/proxy in the operator's namespace) with a
short-lived token of the ServiceAccount synterix-explain bound to the
agents' audience; config/explain ships the roles (docs/troubleshooting.md).`,
		SilenceUsage:  true,
		SilenceErrors: false,
		Version:       version,
		// Help and usage say "kubectl synterix", as kubectl runs it.
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl synterix"},
	}
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	o.config.AddFlags(root.PersistentFlags())
	f := root.PersistentFlags()
	f.StringVarP(&o.output, "output", "o", "", "Output format: json or yaml (default: tables and words)")
	f.StringVar(&o.operatorNamespace, "operator-namespace", "synterix-system", "Namespace of the operator and the agents")
	f.StringVar(&o.serviceAccount, "service-account", "synterix-explain", "ServiceAccount (in the operator namespace) whose audience-bound token the agents are asked with")
	f.StringVar(&o.agentToken, "agent-token", "", "Token to present to the agents instead (it must be bound to the audience synterix-agent)")
	f.BoolVar(&o.direct, "direct", false, "Connect to the agents' node addresses directly instead of through the API server's pods/proxy")
	f.IntVar(&o.agentPort, "agent-port", agentDefaultPort, "With --direct, the agents' metrics port on nodes where no agent pod runs")
	root.AddCommand(newStatus(o), newExplain(o), newTrace(o), newDiff(o))
	return root
}

func (o *options) validate() error {
	switch o.output {
	case "", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--output %q: want json or yaml", o.output)
}
