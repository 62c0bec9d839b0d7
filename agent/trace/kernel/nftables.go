package kernel

import (
	"context"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/nftables"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
)

// NFTables reads what a trace of the nftables backend needs: every
// nftables table of a family (ours and any other program's, through the
// backend's own reader) and the Env.
func NFTables(ctx context.Context, fam model.Family) (*trace.NFTables, error) {
	tables, err := nftables.ReadBack(ctx, fam)
	if err != nil {
		return nil, err
	}
	env, err := ReadEnv(fam)
	if err != nil {
		return nil, err
	}
	return &trace.NFTables{Tables: tables, Env: env}, nil
}
