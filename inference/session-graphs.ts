import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { cacheDir } from '../common/paths.js';
import { writeFileAtomic } from '../common/fs-atomic.js';
import type { DecoderArchitecture } from './architecture.js';
import { splitEmbeddingLookup } from './onnx/embedding-input.js';
import { inspectDecoderGraph, type DecoderGraphInterface } from './onnx/graph-inspect.js';
import { addLogitsToKeep } from './onnx/logits-to-keep.js';
import { decodeModel, encodeModel, type OnnxModel } from './onnx/proto.js';

/** A graph for onnxruntime: in-memory bytes, or a file path when its weights live in external files. */
export type SessionSource = Uint8Array | string;

export interface SessionGraphs {
  decoder: SessionSource;
  /** The token-embedding lookup split off an `input_ids`-only export, if one was split. */
  embedTokens: SessionSource | undefined;
  /** Interface of the decoder graph that the session runs. */
  decoderInterface: DecoderGraphInterface;
  /** True when kvpack rewrote the export (embedding input split off, logits slice added). */
  derived: boolean;
}

/**
 * Prepares the graphs the engine runs for a model file. A decoder that already accepts
 * `inputs_embeds` runs as exported. One that accepts only `input_ids` is split at its embedding
 * lookup so that embedding vectors can be fed, and gains a `num_logits_to_keep` input where its
 * output head allows. Graphs with external weight files are written to the cache folder next to
 * links to those files; all others stay in memory.
 */
export function prepareSessionGraphs(onnxPath: string, arch: DecoderArchitecture): SessionGraphs {
  const bytes = readFileSync(onnxPath);
  let model = decodeModel(bytes);
  const original = inspectDecoderGraph(model, onnxPath);
  let embedModel: OnnxModel | undefined;
  let derived = false;
  if (!original.hasInputsEmbeds) {
    const split = splitEmbeddingLookup(model, arch.hiddenSize, onnxPath);
    model = split.decoder;
    embedModel = split.embedTokens;
    derived = true;
  }
  if (!original.hasLogitsToKeep) {
    const withKeep = addLogitsToKeep(model);
    if (withKeep) {
      model = withKeep;
      derived = true;
    }
  }
  const decoderInterface = inspectDecoderGraph(model, onnxPath);
  if (!derived) {
    // Multimodal-style exports ship their lookup as onnx/embed_tokens.onnx next to the decoder.
    const lookup = path.join(path.dirname(onnxPath), 'embed_tokens.onnx');
    return { decoder: onnxPath, embedTokens: existsSync(lookup) ? lookup : undefined, decoderInterface, derived };
  }
  const externalFiles = externalDataFiles(model);
  if (externalFiles.length === 0) {
    return {
      decoder: encodeModel(model),
      embedTokens: embedModel ? encodeModel(embedModel) : undefined,
      decoderInterface,
      derived,
    };
  }
  const dir = writeDerivedGraphs(onnxPath, bytes, externalFiles, model, embedModel);
  return {
    decoder: path.join(dir, 'decoder.onnx'),
    embedTokens: embedModel ? path.join(dir, 'embed_tokens.onnx') : undefined,
    decoderInterface,
    derived,
  };
}

function externalDataFiles(model: OnnxModel): string[] {
  const files = new Set<string>();
  for (const tensor of model.graph.initializer) {
    const location = tensor.externalData?.find((entry) => entry.key === 'location');
    if (location) files.add(location.value);
  }
  return [...files];
}

/**
 * Writes derived graphs into `<cache>/derived/<sha256 of the export>/` beside symbolic links to
 * the export's external weight files, whose locations are relative to the graph file.
 */
function writeDerivedGraphs(
  onnxPath: string,
  bytes: Uint8Array,
  externalFiles: string[],
  decoder: OnnxModel,
  embedTokens: OnnxModel | undefined,
): string {
  const digest = createHash('sha256').update(bytes).digest('hex');
  const dir = path.join(cacheDir(), 'derived', `${digest}-v1`);
  mkdirSync(dir, { recursive: true });
  for (const file of externalFiles) {
    const link = path.join(dir, file);
    if (!existsSync(link)) {
      mkdirSync(path.dirname(link), { recursive: true });
      symlinkSync(path.resolve(path.dirname(onnxPath), file), link);
    }
  }
  if (!existsSync(path.join(dir, 'decoder.onnx'))) {
    writeFileAtomic(path.join(dir, 'decoder.onnx'), encodeModel(decoder));
  }
  if (embedTokens && !existsSync(path.join(dir, 'embed_tokens.onnx'))) {
    writeFileAtomic(path.join(dir, 'embed_tokens.onnx'), encodeModel(embedTokens));
  }
  return dir;
}
