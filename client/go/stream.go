package memgate

import (
	"context"
	"errors"
	"io"
	"iter"

	"google.golang.org/grpc"

	memgatev1 "github.com/memgate/memgate/client/go/gen/memgate/v1"
)

// Streaming limits. grpc-go sends every message as its own HTTP/2 DATA
// frame, and memgate's HTTP/2 stack (h2 >= 0.4.16) closes the whole
// connection with GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames" once
// roughly 3,000 small frames sit unread in its buffers, which happens as
// soon as a client sends a few thousand small messages faster than the
// server consumes them (the server applies backpressure by not reading).
// Until the server raises that budget, the client keeps the number of
// unread messages small:
const (
	// getStreamWindow is the most keys GetStream has sent whose results
	// have not arrived yet (two of the server's 256-key chunks).
	getStreamWindow = 512
	// clientStreamSplit is the most messages SetStream and DeleteStream send
	// on one client stream; longer sequences use several streams in turn.
	clientStreamSplit = 512
)

// GetResult is the outcome of reading one key in GetStream.
type GetResult struct {
	Key   string
	Value []byte // the stored bytes when Found (non-nil, maybe empty)
	Found bool
	// Err is non-nil (a KeyError) when this key could not be read, for
	// example because it is not a valid key or its shard is down; Found is
	// then false. The stream goes on.
	Err error
}

// GetStream reads a stream of keys over one bidirectional stream
// (BatchGetStream) and yields one result per key, in the order the keys
// were given. The server works in chunks, so an unbounded key sequence uses
// bounded memory on both sides, and a slow consumer slows the stream down.
// At most 512 keys are sent ahead of their results (see "Known server
// issues" in the README).
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
		inFlight := make(chan struct{}, getStreamWindow)
		go func() {
			for k := range keys {
				select {
				case inFlight <- struct{}{}:
				case <-sctx.Done():
					return
				}
				if err := stream.Send(&memgatev1.GetRequest{Key: k}); err != nil {
					// The stream is broken; Recv reports why.
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
			select {
			case <-inFlight:
			default: // more results than keys sent: not expected, do not block
			}
			res := GetResult{Key: r.GetKey(), Found: r.GetFound()}
			switch {
			case r.GetError() != "":
				res.Found = false
				res.Err = KeyError{Key: r.GetKey(), Message: r.GetError()}
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
// generator, over client streams (BatchSetStream) and returns how many
// memcached acknowledged once the sequence ends. Items the server rejects
// are reported in a *BatchError (returned with the count) while the stream
// goes on.
//
// A long sequence is sent as several consecutive streams of at most 512
// items, because the server currently closes a connection on which
// thousands of small messages wait unread (see "Known server issues" in
// the README); the counts and errors are added up. If a stream fails as a whole, SetStream stops and returns
// the count of the streams that completed with the status error.
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
	var failed []KeyError
	err = splitClientStream(ctx, c.rpc.BatchSetStream, reqs, func(r *memgatev1.BatchSetResponse) {
		stored += int(r.GetStored())
		failed = appendKeyErrors(failed, r.GetErrors())
	})
	if err != nil {
		return stored, err
	}
	return stored, batchErrorOf("SetStream", failed)
}

// DeleteStream deletes a stream of keys over client streams
// (BatchDeleteStream) and returns how many existed once the sequence ends.
// Long sequences and failures are handled like SetStream's.
func (c *Client) DeleteStream(ctx context.Context, keys iter.Seq[string]) (deleted int, err error) {
	reqs := func(yield func(*memgatev1.DeleteRequest) bool) {
		for k := range keys {
			if !yield(&memgatev1.DeleteRequest{Key: k}) {
				return
			}
		}
	}
	var failed []KeyError
	err = splitClientStream(ctx, c.rpc.BatchDeleteStream, reqs, func(r *memgatev1.BatchDeleteResponse) {
		deleted += int(r.GetDeleted())
		failed = appendKeyErrors(failed, r.GetErrors())
	})
	if err != nil {
		return deleted, err
	}
	return deleted, batchErrorOf("DeleteStream", failed)
}

// splitClientStream sends reqs over consecutive client streams of at most
// clientStreamSplit messages and hands each stream's response to done. An
// empty sequence still makes one (empty) call, so the server sees it.
func splitClientStream[Req, Resp any](
	ctx context.Context,
	open func(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[Req, Resp], error),
	reqs iter.Seq[*Req],
	done func(*Resp),
) error {
	var stream grpc.ClientStreamingClient[Req, Resp]
	sent := 0
	finish := func() error {
		resp, err := stream.CloseAndRecv()
		stream, sent = nil, 0
		if err != nil {
			return convert(ctx, err)
		}
		done(resp)
		return nil
	}
	opened := false
	var err error
	for req := range reqs {
		if stream == nil {
			if stream, err = open(ctx); err != nil {
				return convert(ctx, err)
			}
			opened = true
		}
		if stream.Send(req) != nil {
			break // the stream is broken; CloseAndRecv reports why
		}
		if sent++; sent == clientStreamSplit {
			if err := finish(); err != nil {
				return err
			}
		}
	}
	if stream == nil && !opened {
		if stream, err = open(ctx); err != nil {
			return convert(ctx, err)
		}
	}
	if stream != nil {
		return finish()
	}
	return nil
}
