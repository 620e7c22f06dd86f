import path from 'node:path';
import { AutoModelForCausalLM, BaseStreamer, env, Tensor, type PreTrainedModel, type TextStreamer } from '@huggingface/transformers';
import { KvpackError } from '../../common/errors.js';
import type { DecoderArchitecture } from '../../inference/architecture.js';
import { openModelFolder } from '../../inference/model-folder.js';

/**
 * Greedy text generation through @huggingface/transformers (Transformers.js) over a kvpack model
 * folder. It is the baseline a TypeScript developer has without kvpack, and it prefills the full
 * context in one forward pass on every request.
 */
export interface TransformersPeer {
  /**
   * Greedy-generates one token after `tokens` (full context incl. BOS) with @huggingface/transformers; returns wall ms from call to first token and the token id.
   *
   * NOTE: the whole context runs as one onnxruntime call, with attention scores of
   * `[heads, seq, seq]` floats per layer. Peak RSS measured by hand on the llama-100m bench shape
   * (AMD EPYC, 2 cores): 2.0 GiB at 2,048 tokens, 4.7 to 4.9 GiB at 4,096 and 8.5 GiB at 8,192,
   * against 1.2 to 1.3 GiB after loading.
   */
  firstToken(tokens: Int32Array): Promise<{ ms: number; token: number }>;
  release(): Promise<void>;
}

/**
 * Loads the folder's decoder with `AutoModelForCausalLM.from_pretrained` (Transformers.js 4.3.2,
 * dtype fp32, CPU, local files only) and its default onnxruntime session options. Sets
 * `env.allowRemoteModels = false`, for every later load in this process too.
 */
export async function loadTransformersPeer(modelDir: string): Promise<TransformersPeer> {
  // kvpack's own checks name the missing file or invalid config, which Transformers.js reports less clearly.
  const folder = openModelFolder(modelDir);
  env.allowRemoteModels = false;
  // Transformers.js loads `<subfolder>/<model_file_name>.onnx` for dtype fp32, and reads a relative
  // "owner/name" path as a Hub model id, so the folder is passed as an absolute path.
  const onnxRelative = path.relative(folder.dir, folder.onnxPath);
  let model: PreTrainedModel;
  try {
    model = await AutoModelForCausalLM.from_pretrained(folder.dir, {
      local_files_only: true,
      dtype: 'fp32',
      device: 'cpu',
      subfolder: path.dirname(onnxRelative) === '.' ? '' : path.dirname(onnxRelative),
      model_file_name: path.basename(onnxRelative, '.onnx'),
    });
  } catch (error) {
    // The config passed kvpack's checks above, so the ONNX file is the likely cause.
    throw new KvpackError(
      'UNSUPPORTED_ONNX_GRAPH',
      `Transformers.js failed to load ${folder.onnxPath} as a causal language model: ${(error as Error).message}. ` +
        'The peer needs a folder that AutoModelForCausalLM.from_pretrained accepts.',
      { dir: folder.dir },
    );
  }
  return new GeneratePeer(folder.arch, model);
}

class GeneratePeer implements TransformersPeer {
  readonly #arch: DecoderArchitecture;
  #model: PreTrainedModel | undefined;

  constructor(arch: DecoderArchitecture, model: PreTrainedModel) {
    this.#arch = arch;
    this.#model = model;
  }

  async firstToken(tokens: Int32Array): Promise<{ ms: number; token: number }> {
    const start = performance.now();
    const model = this.#model;
    if (!model) {
      throw new KvpackError('INVALID_ARGUMENT', 'This Transformers.js peer was released; load it again with loadTransformersPeer.');
    }
    checkTokens(tokens, this.#arch);

    const inputIds = new Tensor('int64', BigInt64Array.from(tokens, BigInt), [1, tokens.length]);
    const attentionMask = new Tensor('int64', new BigInt64Array(tokens.length).fill(1n), [1, tokens.length]);
    const streamer = new FirstTokenStreamer();
    await model.generate({
      input_ids: inputIds,
      attention_mask: attentionMask,
      max_new_tokens: 1,
      do_sample: false,
      // The 4.3.2 type declarations intersect generate()'s BaseStreamer with GenerationConfig's
      // TextStreamer, but generate() only calls put() and end().
      streamer: streamer as unknown as TextStreamer,
    });
    if (streamer.token === undefined || streamer.receivedAt === undefined) {
      throw new Error(`Transformers.js generate() returned without passing a generated token to its streamer (${tokens.length} input tokens).`);
    }
    return { ms: streamer.receivedAt - start, token: streamer.token };
  }

  async release(): Promise<void> {
    const model = this.#model;
    this.#model = undefined;
    await model?.dispose();
  }
}

/**
 * Records the time and id of the first generated token. Transformers.js 4.3.2 `generate()` passes
 * the prompt ids to `put` once before its first forward pass, then each step's new ids.
 */
class FirstTokenStreamer extends BaseStreamer {
  token: number | undefined;
  /** `performance.now()` when the first generated token arrived. */
  receivedAt: number | undefined;
  #promptSeen = false;

  override put(value: bigint[][]): void {
    if (!this.#promptSeen) {
      this.#promptSeen = true;
      return;
    }
    if (this.token === undefined) {
      this.receivedAt = performance.now();
      this.token = Number(value[0][0]);
    }
  }

  override end(): void {}
}

/** Rejects the contexts that `InferenceEngine.forward` rejects, so both sides fail on the same inputs. */
function checkTokens(tokens: Int32Array, arch: DecoderArchitecture): void {
  if (tokens.length === 0) {
    throw new KvpackError('INVALID_ARGUMENT', 'firstToken needs at least one token; pass the full context including BOS.');
  }
  if (tokens.length > arch.maxPositionEmbeddings) {
    throw new KvpackError(
      'SEQUENCE_TOO_LONG',
      `The context has ${tokens.length} tokens but the model has ${arch.maxPositionEmbeddings} positions (max_position_embeddings); ` +
        'shorten the context.',
      { tokens: tokens.length, maxPositions: arch.maxPositionEmbeddings },
    );
  }
  for (let i = 0; i < tokens.length; i++) {
    const id = tokens[i];
    if (id < 0 || id >= arch.vocabSize) {
      throw new KvpackError('INVALID_ARGUMENT', `Token id ${id} at index ${i} is outside the vocabulary [0, ${arch.vocabSize}).`);
    }
  }
}
