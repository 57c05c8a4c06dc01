package memgate

import (
	"context"
	"errors"
	"io"
	"iter"

	"google.golang.org/grpc"

	memgatev1 "github.com/memgate/memgate/client/go/gen/memgate/v1"
)

// GetResult is the outcome of reading one key in GetStream.
type GetResult struct {
	Key   string
	Value []byte // the stored bytes when Found (non-nil, maybe empty)
	Found bool
	// Err is non-nil (a KeyError) when this key could not be read, for
	// example because it is not a valid key or its shard is down; Found is
	// then false. The stream goes on. status.Code(Err) is the code a Get
	// of the key would have returned (codes.InvalidArgument,
	// codes.Unavailable, ...), and codes.OK when Err is nil.
	Err error
}

// GetStream reads a stream of keys over one bidirectional stream
// (BatchGetStream) and yields one result per key, in the order the keys
// were given. The server works in chunks, so an unbounded key sequence uses
// bounded memory on both sides. Sending and receiving are independent:
// keys go out as fast as HTTP/2 flow control lets them, and a slow
// consumer slows the server, and with it the sending, down (backpressure).
// The server reads keys only while it can pass results on, so a key
// sequence that waits for the loop body to read on stalls once the unread
// results fill the receive window (DefaultStreamWindowBytes, tens of
// thousands of small results).
//
// The stream starts when the returned sequence is iterated. keys is
// consumed in a separate goroutine while results are yielded. If the stream
// fails as a whole (connection lost, ctx ended) the sequence
// yields a zero GetResult with the error, as a status error, and stops.
// Breaking out of the loop cancels the stream. The per-call default timeout
// does not apply to streams: bound them with ctx.
//
//	for r, err := range c.GetStream(ctx, slices.Values(keys)) {
//		if err != nil { return err }
//		if r.Found { use(r.Key, r.Value) }
//	}
//
// To read keys from a channel, pass func(yield func(string) bool) { for k
// := range ch { if !yield(k) { return } } }.
func (c *Client) GetStream(ctx context.Context, keys iter.Seq[string]) iter.Seq2[GetResult, error] {
	return func(yield func(GetResult, error) bool) {
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.rpc.BatchGetStream(sctx)
		if err != nil {
			yield(GetResult{}, convert(ctx, err))
			return
		}
		go func() {
			for k := range keys {
				// Send blocks while flow control holds the stream back; it
				// fails once the stream is broken or cancelled (Recv then
				// reports why).
				if err := stream.Send(&memgatev1.GetRequest{Key: k}); err != nil {
					return
				}
			}
			_ = stream.CloseSend()
		}()
		for {
			r, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return // the server ends the stream after our CloseSend
			}
			if err != nil {
				yield(GetResult{}, convert(ctx, err))
				return
			}
			res := GetResult{Key: r.GetKey(), Found: r.GetFound()}
			switch {
			case r.GetError() != "":
				res.Found = false
				res.Err = KeyError{Key: r.GetKey(), Code: keyCode(r.GetErrorCode()), Message: r.GetError()}
			case r.GetFound():
				res.Value = nonNil(r.GetValue())
			}
			if !yield(res, nil) {
				return
			}
		}
	}
}

// SetStream stores a stream of items, for example maps.All(m) or a
// generator, over one client stream (BatchSetStream) and returns how many
// memcached acknowledged once the sequence ends. Items are sent as fast as
// the server takes them (flow control), so any number of them works in
// bounded memory. Items the server rejects are reported in a *BatchError
// (returned with the count) while the stream goes on. If the stream fails
// as a whole, the count is 0 and the error is the status error; items sent
// before the failure may have been stored.
//
// opts apply to every item. The per-call default timeout does not apply to
// streams: bound them with ctx.
func (c *Client) SetStream(ctx context.Context, items iter.Seq2[string, []byte], opts ...SetOption) (stored int, err error) {
	ttl, err := ttlSeconds(opts)
	if err != nil {
		return 0, err
	}
	reqs := func(yield func(*memgatev1.SetRequest) bool) {
		for k, v := range items {
			if !yield(&memgatev1.SetRequest{Key: k, Value: v, TtlSeconds: ttl}) {
				return
			}
		}
	}
	resp, err := clientStream(ctx, c.rpc.BatchSetStream, reqs)
	if err != nil {
		return 0, err
	}
	return int(resp.GetStored()), batchErrorOf("SetStream", appendKeyErrors(nil, resp.GetErrors()))
}

// DeleteStream deletes a stream of keys over one client stream
// (BatchDeleteStream) and returns how many existed once the sequence ends.
// Failures are handled like SetStream's.
func (c *Client) DeleteStream(ctx context.Context, keys iter.Seq[string]) (deleted int, err error) {
	reqs := func(yield func(*memgatev1.DeleteRequest) bool) {
		for k := range keys {
			if !yield(&memgatev1.DeleteRequest{Key: k}) {
				return
			}
		}
	}
	resp, err := clientStream(ctx, c.rpc.BatchDeleteStream, reqs)
	if err != nil {
		return 0, err
	}
	return int(resp.GetDeleted()), batchErrorOf("DeleteStream", appendKeyErrors(nil, resp.GetErrors()))
}

// clientStream sends reqs over one client stream and returns the server's
// response. Send blocks while HTTP/2 flow control holds the stream back,
// which is the backpressure; an empty sequence still makes the call.
func clientStream[Req, Resp any](
	ctx context.Context,
	open func(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[Req, Resp], error),
	reqs iter.Seq[*Req],
) (*Resp, error) {
	// Cancelled on return, so the stream is released on every path,
	// a panic in the sequence included.
	ctx2, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := open(ctx2)
	if err != nil {
		return nil, convert(ctx, err)
	}
	for req := range reqs {
		if stream.Send(req) != nil {
			break // the stream is broken; CloseAndRecv reports why
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, convert(ctx, err)
	}
	return resp, nil
}
