package kivigo

import "context"

// The method sets below are those of kivigo's backend interfaces in
// github.com/kivigo/kivigo/pkg/models (kivigo v1.6.x): models.KV,
// models.KVWithBatch and models.KVWithHealth. They are restated here
// because this module does not depend on kivigo (its module could not be
// fetched when this backend was written); the assertions make the build
// fail if Backend drifts from them. Once kivigo is a dependency, replace
// them with
//
//	var (
//		_ models.KV           = (*Backend)(nil)
//		_ models.KVWithBatch  = (*Backend)(nil)
//		_ models.KVWithHealth = (*Backend)(nil)
//	)
type (
	kivigoKV interface {
		Close() error
		List(ctx context.Context, prefix string) (keys []string, err error)
		GetRaw(ctx context.Context, key string) (value []byte, err error)
		SetRaw(ctx context.Context, key string, value []byte) error
		Delete(ctx context.Context, key string) error
	}
	kivigoKVWithBatch interface {
		BatchGetRaw(ctx context.Context, keys []string) (map[string][]byte, error)
		BatchSetRaw(ctx context.Context, kv map[string][]byte) error
		BatchDelete(ctx context.Context, keys []string) error
	}
	kivigoKVWithHealth interface {
		Health(ctx context.Context) error
	}
)

var (
	_ kivigoKV           = (*Backend)(nil)
	_ kivigoKVWithBatch  = (*Backend)(nil)
	_ kivigoKVWithHealth = (*Backend)(nil)
)
