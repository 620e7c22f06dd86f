import * as ort from 'onnxruntime-node';
import { KvpackError } from '../common/errors.js';
import { concatFloat32 } from '../common/typed-arrays.js';
import type { DecoderArchitecture } from './architecture.js';
import { modelFingerprint } from './fingerprint.js';
import { KvCache, type KvLayout } from './kv-cache.js';
import { openModelFolder, type ModelFolder } from './model-folder.js';
import { pastKeyName, pastValueName, presentKeyName, presentValueName } from './onnx/decoder-graph.js';
import type { DecoderGraphInterface } from './onnx/graph-inspect.js';
import { prepareSessionGraphs, type SessionSource } from './session-graphs.js';
import { fingerprintTokenizer, Tokenizer } from './tokenizer.js';

export interface EngineOptions {
  /** Threads for one operator (onnxruntime `intraOpNumThreads`); 0 lets onnxruntime choose. Default 0. */
  threads?: number;
  /**
   * Maximum number of new entries one onnxruntime call computes. Longer inputs are prefilled in steps
   * of this many entries, each attending to the cache of the steps before, so attention scores stay
   * `[heads, step, past + step]` instead of `[heads, seq, seq]`. Default 1024.
   */
  prefillStep?: number;
}

const DEFAULT_PREFILL_STEP = 1024;

/** Which positions of a forward pass return logits. */
export type LogitsSelection = 'all' | 'last' | 'none';

export interface ForwardRequest {
  /** Token ids `[seq]`; give either tokens or embeddings. */
  tokens?: ArrayLike<number>;
  /** Embedding vectors `[seq, hidden]`, row-major. */
  embeddings?: Float32Array;
  /** Position of each new entry `[seq]`; defaults to `past.length + i`. */
  positions?: ArrayLike<number>;
  /** Cache of earlier entries; the new entries attend to all of them. */
  past?: KvCache;
  /** Default `last`. */
  logits?: LogitsSelection;
}

export interface ForwardResult {
  /** `[rows, vocab]`: every position for `all`, the last for `last`, empty for `none`. */
  logits: Float32Array;
  /** The past entries followed by this call's entries. */
  present: KvCache;
}

/**
 * Runs a decoder language model through onnxruntime-node while the caller owns the KV cache: the
 * cache goes in as `past_key_values` and comes back as `present`. One engine holds one long-lived
 * session (plus a small embedding-lookup session for `input_ids`-only exports); call `release()`
 * to free them.
 */
export class InferenceEngine {
  readonly folder: ModelFolder;
  readonly arch: DecoderArchitecture;
  readonly layout: KvLayout;
  readonly tokenizer: Tokenizer;
  readonly graph: DecoderGraphInterface;
  /** True when the export was rewritten at load (see `prepareSessionGraphs`). */
  readonly derivedGraph: boolean;
  /** sha256 over config.json and the ONNX weights; packets built by another model never match it. */
  readonly modelFingerprint: string;
  /** sha256 over tokenizer.json and tokenizer_config.json. */
  readonly tokenizerFingerprint: string;
  /** See `EngineOptions.prefillStep`. */
  readonly prefillStep: number;
  private session: ort.InferenceSession | undefined;
  private embedSession: ort.InferenceSession | undefined;

  private constructor(
    folder: ModelFolder,
    tokenizer: Tokenizer,
    fingerprints: { model: string; tokenizer: string },
    graph: DecoderGraphInterface,
    derivedGraph: boolean,
    session: ort.InferenceSession,
    embedSession: ort.InferenceSession | undefined,
    prefillStep: number,
  ) {
    this.prefillStep = prefillStep;
    this.modelFingerprint = fingerprints.model;
    this.tokenizerFingerprint = fingerprints.tokenizer;
    this.folder = folder;
    this.arch = folder.arch;
    this.layout = { numLayers: folder.arch.numLayers, numKvHeads: folder.arch.numKvHeads, headDim: folder.arch.headDim };
    this.tokenizer = tokenizer;
    this.graph = graph;
    this.derivedGraph = derivedGraph;
    this.session = session;
    this.embedSession = embedSession;
  }

  /** Loads a model folder: config, tokenizer and ONNX session. */
  static async load(modelDir: string, options: EngineOptions = {}): Promise<InferenceEngine> {
    const prefillStep = options.prefillStep ?? DEFAULT_PREFILL_STEP;
    if (!Number.isInteger(prefillStep) || prefillStep < 1) {
      throw new KvpackError('INVALID_ARGUMENT', `prefillStep must be a positive integer; got ${prefillStep}.`);
    }
    const folder = openModelFolder(modelDir);
    const graphs = prepareSessionGraphs(folder.onnxPath, folder.arch);
    checkGraphMatchesConfig(graphs.decoderInterface, folder);
    const tokenizer = await Tokenizer.fromFolder(folder.dir);
    const fingerprints = {
      model: await modelFingerprint(folder.dir, folder.onnxPath),
      tokenizer: await fingerprintTokenizer(folder.dir),
    };
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      intraOpNumThreads: options.threads ?? 0,
      logSeverityLevel: 3,
    };
    const session = await createSession(graphs.decoder, sessionOptions);
    const embedSession = graphs.embedTokens ? await createSession(graphs.embedTokens, sessionOptions) : undefined;
    return new InferenceEngine(folder, tokenizer, fingerprints, graphs.decoderInterface, graphs.derived, session, embedSession, prefillStep);
  }

  /** Frees the onnxruntime sessions; the engine cannot run afterwards. */
  async release(): Promise<void> {
    const sessions = [this.session, this.embedSession];
    this.session = undefined;
    this.embedSession = undefined;
    await Promise.all(sessions.map((session) => session?.release()));
  }

  /** Looks up the token embeddings `[seq, hidden]` the model itself would use. */
  async embedTokens(tokens: ArrayLike<number>): Promise<Float32Array> {
    this.checkTokens(tokens);
    if (!this.embedSession) {
      throw new KvpackError(
        'UNSUPPORTED_ONNX_GRAPH',
        `${this.folder.onnxPath} takes inputs_embeds but the folder has no onnx/embed_tokens.onnx to look up token embeddings with.`,
      );
    }
    const ids = new ort.Tensor('int64', toInt64(tokens), [1, tokens.length]);
    const result = await this.embedSession.run({ input_ids: ids });
    return result.inputs_embeds.data as Float32Array;
  }

  /**
   * Runs the decoder over new tokens or embeddings after an optional cache. Inputs longer than the
   * prefill step run as several onnxruntime calls; the result is the same up to float rounding.
   */
  async forward(request: ForwardRequest): Promise<ForwardResult> {
    this.requireSession();
    let past = request.past ?? KvCache.empty(this.layout);
    past.assertLayout(this.layout, 'past KV cache');
    const seqLength = this.checkInput(request);
    const positions = this.resolvePositions(request.positions, past.length, seqLength);
    const selection = request.logits ?? 'last';
    if (seqLength <= this.prefillStep) {
      return this.runStep({ ...request, positions }, past, seqLength, selection);
    }
    const hidden = this.arch.hiddenSize;
    const logits: Float32Array[] = [];
    let result: ForwardResult | undefined;
    for (let start = 0; start < seqLength; start += this.prefillStep) {
      const end = Math.min(seqLength, start + this.prefillStep);
      const step: ForwardRequest = {
        tokens: request.tokens === undefined ? undefined : Array.prototype.slice.call(request.tokens, start, end),
        embeddings: request.embeddings?.subarray(start * hidden, end * hidden),
        positions: Array.prototype.slice.call(positions, start, end),
      };
      // Only the last step's logits matter unless every position's logits were requested.
      const stepSelection = selection === 'all' || end === seqLength ? selection : 'none';
      result = await this.runStep(step, past, end - start, stepSelection);
      if (selection === 'all') logits.push(result.logits);
      past = result.present;
    }
    return { logits: selection === 'all' ? concatFloat32(logits) : result!.logits, present: past };
  }

  /** Runs one onnxruntime call over validated inputs. */
  private async runStep(request: ForwardRequest, past: KvCache, seqLength: number, selection: LogitsSelection): Promise<ForwardResult> {
    const session = this.requireSession();
    const positions = request.positions!;
    const feeds: Record<string, ort.Tensor> = {
      ...(await this.tokenFeeds(request, seqLength)),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(past.length + seqLength).fill(1n), [1, past.length + seqLength]),
    };
    if (this.graph.hasPositionIds) {
      feeds.position_ids = new ort.Tensor('int64', toInt64(positions), [1, seqLength]);
    } else {
      this.requireContiguousPositions(positions, past.length);
    }
    if (this.graph.hasLogitsToKeep) {
      feeds.num_logits_to_keep = new ort.Tensor('int64', BigInt64Array.from([selection === 'all' ? 0n : 1n]), []);
    }
    if (this.graph.hasUseCacheBranch) {
      feeds.use_cache_branch = new ort.Tensor('bool', [past.length > 0], [1]);
    }
    const { numKvHeads, headDim } = this.layout;
    for (let layer = 0; layer < this.layout.numLayers; layer++) {
      feeds[pastKeyName(layer)] = new ort.Tensor('float32', past.keys[layer], [1, numKvHeads, past.length, headDim]);
      feeds[pastValueName(layer)] = new ort.Tensor('float32', past.values[layer], [1, numKvHeads, past.length, headDim]);
    }

    const outputs = await session.run(feeds);
    const present = this.readPresent(outputs, past.length + seqLength);
    return { logits: selectLogits(outputs.logits, selection, this.arch.vocabSize), present };
  }

  private requireSession(): ort.InferenceSession {
    if (!this.session) {
      throw new KvpackError('INVALID_ARGUMENT', 'This inference engine was released; load the model again.');
    }
    return this.session;
  }

  private checkInput(request: ForwardRequest): number {
    const { tokens, embeddings } = request;
    if ((tokens === undefined) === (embeddings === undefined)) {
      throw new KvpackError('INVALID_ARGUMENT', 'A forward pass takes either tokens or embeddings, not both and not neither.');
    }
    if (tokens !== undefined) {
      this.checkTokens(tokens);
      return tokens.length;
    }
    const hidden = this.arch.hiddenSize;
    const values = embeddings as Float32Array;
    if (values.length === 0 || values.length % hidden !== 0) {
      throw new KvpackError(
        'INVALID_ARGUMENT',
        `Embeddings must be [seq, ${hidden}] with seq >= 1; got ${values.length} floats, which is not a positive multiple of ${hidden}.`,
      );
    }
    return values.length / hidden;
  }

  private checkTokens(tokens: ArrayLike<number>): void {
    if (tokens.length === 0) {
      throw new KvpackError('INVALID_ARGUMENT', 'A forward pass needs at least one token.');
    }
    for (let i = 0; i < tokens.length; i++) {
      const id = tokens[i];
      if (!Number.isInteger(id) || id < 0 || id >= this.arch.vocabSize) {
        throw new KvpackError('INVALID_ARGUMENT', `Token id ${id} at index ${i} is outside the vocabulary [0, ${this.arch.vocabSize}).`);
      }
    }
  }

  private resolvePositions(positions: ArrayLike<number> | undefined, pastLength: number, seqLength: number): ArrayLike<number> {
    const resolved = positions ?? Array.from({ length: seqLength }, (_, i) => pastLength + i);
    if (resolved.length !== seqLength) {
      throw new KvpackError('INVALID_ARGUMENT', `Got ${resolved.length} positions for ${seqLength} new entries; give one position per entry.`);
    }
    const max = this.arch.maxPositionEmbeddings;
    for (let i = 0; i < resolved.length; i++) {
      const position = resolved[i];
      if (!Number.isInteger(position) || position < 0) {
        throw new KvpackError('INVALID_ARGUMENT', `Position ${position} at index ${i} must be a non-negative integer.`);
      }
      if (position >= max) {
        throw new KvpackError(
          'SEQUENCE_TOO_LONG',
          `Position ${position} is beyond the model's maximum of ${max} positions (max_position_embeddings); ` +
            'shorten the input or retrieve fewer chunks.',
          { position, maxPositions: max },
        );
      }
    }
    return resolved;
  }

  private requireContiguousPositions(positions: ArrayLike<number>, pastLength: number): void {
    for (let i = 0; i < positions.length; i++) {
      if (positions[i] !== pastLength + i) {
        throw new KvpackError(
          'UNSUPPORTED_ONNX_GRAPH',
          `${this.folder.onnxPath} has no position_ids input, so entries take the positions of their cache index; ` +
            `position ${positions[i]} at index ${i} differs from ${pastLength + i}.`,
        );
      }
    }
  }

  private async tokenFeeds(request: ForwardRequest, seqLength: number): Promise<Record<string, ort.Tensor>> {
    if (request.tokens !== undefined && this.graph.hasInputIds) {
      return { input_ids: new ort.Tensor('int64', toInt64(request.tokens), [1, seqLength]) };
    }
    const embeddings = request.embeddings ?? (await this.embedTokens(request.tokens as ArrayLike<number>));
    return { inputs_embeds: new ort.Tensor('float32', embeddings, [1, seqLength, this.arch.hiddenSize]) };
  }

  private readPresent(outputs: ort.InferenceSession.OnnxValueMapType, length: number): KvCache {
    const keys: Float32Array[] = [];
    const values: Float32Array[] = [];
    for (let layer = 0; layer < this.layout.numLayers; layer++) {
      keys.push(outputs[presentKeyName(layer)].data as Float32Array);
      values.push(outputs[presentValueName(layer)].data as Float32Array);
    }
    return new KvCache(this.layout, length, keys, values);
  }
}

async function createSession(source: SessionSource, options: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  return typeof source === 'string' ? ort.InferenceSession.create(source, options) : ort.InferenceSession.create(source, options);
}

function checkGraphMatchesConfig(graph: DecoderGraphInterface, folder: ModelFolder): void {
  const { arch } = folder;
  const mismatch =
    graph.numLayers !== arch.numLayers ||
    (graph.kvHeads !== undefined && graph.kvHeads !== arch.numKvHeads) ||
    (graph.headDim !== undefined && graph.headDim !== arch.headDim);
  if (mismatch) {
    throw new KvpackError(
      'MODEL_CONFIG_INVALID',
      `${folder.onnxPath} has ${graph.numLayers} layers of [batch, ${graph.kvHeads ?? '?'}, seq, ${graph.headDim ?? '?'}] caches but ` +
        `config.json describes ${arch.numLayers} layers of [batch, ${arch.numKvHeads}, seq, ${arch.headDim}]; the config does not belong to this model.`,
    );
  }
}

function selectLogits(tensor: ort.Tensor, selection: LogitsSelection, vocabSize: number): Float32Array {
  const data = tensor.data as Float32Array;
  if (selection === 'none') {
    return new Float32Array(0);
  }
  if (selection === 'last' && data.length > vocabSize) {
    return data.slice(data.length - vocabSize);
  }
  return data;
}


function toInt64(values: ArrayLike<number>): BigInt64Array {
  const out = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i]);
  return out;
}
