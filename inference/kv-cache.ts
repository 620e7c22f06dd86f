import { KvpackError } from '../common/errors.js';

/** The per-layer cache shape of a model: every layer holds `[1, kv_heads, length, head_dim]` keys and values. */
export interface KvLayout {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
}

/**
 * Keys and values of one sequence for every layer, each a float32 `[1, kv_heads, length, head_dim]`
 * array. Keys are stored after RoPE, rotated for the positions they were computed at. A cache
 * never changes after construction: concat, slice and re-rotation return new caches, so one
 * cache can back many queries at once.
 */
export class KvCache {
  readonly layout: KvLayout;
  readonly length: number;
  readonly keys: readonly Float32Array[];
  readonly values: readonly Float32Array[];

  constructor(layout: KvLayout, length: number, keys: Float32Array[], values: Float32Array[]) {
    const expected = layout.numKvHeads * length * layout.headDim;
    if (keys.length !== layout.numLayers || values.length !== layout.numLayers) {
      throw shapeError(`a KV cache needs ${layout.numLayers} layers of keys and values, got ${keys.length} and ${values.length}`, layout);
    }
    for (let layer = 0; layer < layout.numLayers; layer++) {
      if (keys[layer].length !== expected || values[layer].length !== expected) {
        throw shapeError(
          `layer ${layer} holds ${keys[layer].length} key and ${values[layer].length} value floats, expected ` +
            `${expected} for [1, ${layout.numKvHeads}, ${length}, ${layout.headDim}]`,
          layout,
        );
      }
    }
    this.layout = layout;
    this.length = length;
    this.keys = keys;
    this.values = values;
  }

  static empty(layout: KvLayout): KvCache {
    const none = () => Array.from({ length: layout.numLayers }, () => new Float32Array(0));
    return new KvCache(layout, 0, none(), none());
  }

  /** Joins caches along the sequence axis, in order. */
  static concat(layout: KvLayout, parts: readonly KvCache[]): KvCache {
    for (const part of parts) part.assertLayout(layout, 'concatenated cache');
    const length = parts.reduce((sum, part) => sum + part.length, 0);
    const join = (pick: (part: KvCache) => readonly Float32Array[], layer: number) => {
      const out = new Float32Array(layout.numKvHeads * length * layout.headDim);
      let offset = 0;
      for (const part of parts) {
        copySequence(pick(part)[layer], part.length, out, length, offset, layout);
        offset += part.length;
      }
      return out;
    };
    const layers = Array.from({ length: layout.numLayers }, (_, layer) => layer);
    return new KvCache(
      layout,
      length,
      layers.map((layer) => join((part) => part.keys, layer)),
      layers.map((layer) => join((part) => part.values, layer)),
    );
  }

  /** Returns entries `[start, end)` of the sequence axis as a new cache. */
  slice(start: number, end: number = this.length): KvCache {
    if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= this.length)) {
      throw new KvpackError('INVALID_ARGUMENT', `Cannot slice [${start}, ${end}) from a KV cache of length ${this.length}.`);
    }
    const { numKvHeads, headDim } = this.layout;
    const length = end - start;
    const cut = (source: Float32Array) => {
      const out = new Float32Array(numKvHeads * length * headDim);
      for (let head = 0; head < numKvHeads; head++) {
        const from = (head * this.length + start) * headDim;
        out.set(source.subarray(from, from + length * headDim), head * length * headDim);
      }
      return out;
    };
    return new KvCache(this.layout, length, this.keys.map(cut), this.values.map(cut));
  }

  /** Bytes of key and value data held (float32). */
  get byteLength(): number {
    return 2 * this.layout.numLayers * this.layout.numKvHeads * this.length * this.layout.headDim * 4;
  }

  /** Throws `KV_CACHE_SHAPE_MISMATCH` unless this cache has the given layout. */
  assertLayout(layout: KvLayout, what: string): void {
    const mine = this.layout;
    if (mine.numLayers !== layout.numLayers || mine.numKvHeads !== layout.numKvHeads || mine.headDim !== layout.headDim) {
      throw shapeError(
        `${what} has ${mine.numLayers} layers of [1, ${mine.numKvHeads}, seq, ${mine.headDim}] but the model expects ` +
          `${layout.numLayers} layers of [1, ${layout.numKvHeads}, seq, ${layout.headDim}]`,
        layout,
      );
    }
  }
}

/** Copies a `[kv_heads, sourceLength, head_dim]` block into `[kv_heads, targetLength, head_dim]` at `offset`. */
function copySequence(
  source: Float32Array,
  sourceLength: number,
  target: Float32Array,
  targetLength: number,
  offset: number,
  layout: KvLayout,
): void {
  const { numKvHeads, headDim } = layout;
  for (let head = 0; head < numKvHeads; head++) {
    const from = head * sourceLength * headDim;
    target.set(source.subarray(from, from + sourceLength * headDim), (head * targetLength + offset) * headDim);
  }
}

function shapeError(detail: string, layout: KvLayout): KvpackError {
  return new KvpackError(
    'KV_CACHE_SHAPE_MISMATCH',
    `KV cache shape mismatch: ${detail}. Use caches produced by the same model (or packets built for it).`,
    { layout },
  );
}
