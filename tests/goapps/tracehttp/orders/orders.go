// Package orders is the fixture's "business" code: the frames lgf's stack summary must show.
package orders

import (
	"context"

	"lgf.test/tracehttp/inventory"
)

type Service struct{ inv *inventory.Client }

func NewService(inv *inventory.Client) *Service { return &Service{inv: inv} }

// Place reserves stock for an order; how the reservation stalls is the request's choice.
//
//go:noinline
func (s *Service) Place(ctx context.Context, stall string, ms int) error {
	return s.inv.Reserve(ctx, stall, ms)
}
