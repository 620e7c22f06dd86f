import { KvpackError } from '../../common/errors.js';
import { valueInfo } from './graph-builder.js';
import { OnnxDataType, toNumber, type OnnxModel, type OnnxNode, type OnnxTensor } from './proto.js';

/** The two graphs that replace a decoder whose only token input is `input_ids`. */
export interface EmbeddingSplit {
  /** `input_ids [batch, seq]` → `inputs_embeds [batch, seq, hidden]`: the export's own lookup. */
  embedTokens: OnnxModel;
  /** The decoder with `inputs_embeds` in place of `input_ids`; everything else unchanged. */
  decoder: OnnxModel;
}

const lookupOps = new Set(['Gather', 'GatherBlockQuantized']);

/**
 * Splits a decoder export that accepts only `input_ids` at its token-embedding lookup, so that
 * kvpack can feed embedding vectors (adapter vectors have no token id). The lookup node moves to
 * its own graph; `Shape(input_ids)` nodes, which exports use for batch and sequence sizes, read the
 * first two dimensions of `inputs_embeds` instead. Any other use of `input_ids` is rejected.
 */
export function splitEmbeddingLookup(model: OnnxModel, hiddenSize: number, source: string): EmbeddingSplit {
  const graph = model.graph;
  const consumers = graph.node.filter((node) => node.input.includes('input_ids'));
  const lookups = consumers.filter((node) => lookupOps.has(node.opType) && node.input[1] === 'input_ids');
  const shapes = consumers.filter((node) => node.opType === 'Shape');
  const others = consumers.filter((node) => !lookups.includes(node) && !shapes.includes(node));
  if (lookups.length !== 1 || others.length > 0) {
    const described = consumers.map((node) => `${node.opType} ${node.name ?? ''}`.trim()).join(', ');
    throw new KvpackError(
      'UNSUPPORTED_ONNX_GRAPH',
      `${source}: cannot find a single token-embedding lookup on input_ids to replace with inputs_embeds ` +
        `(input_ids feeds: ${described}). Export the model with an inputs_embeds input instead.`,
    );
  }
  const lookup = lookups[0];
  const embeddings = lookup.output[0];

  const embedTokens = buildEmbedTokensModel(model, lookup, embeddings, hiddenSize);
  const decoder = replaceLookupWithInput(model, lookup, shapes, embeddings, hiddenSize);
  return { embedTokens, decoder };
}

function buildEmbedTokensModel(model: OnnxModel, lookup: OnnxNode, embeddings: string, hiddenSize: number): OnnxModel {
  const used = new Set(lookup.input);
  const initializers = model.graph.initializer.filter((t) => used.has(t.name));
  return {
    ...model,
    graph: {
      name: 'embed_tokens',
      node: [{ ...lookup, output: ['inputs_embeds'] }],
      initializer: initializers,
      input: [valueInfo('input_ids', OnnxDataType.INT64, ['batch_size', 'sequence_length'])],
      output: [valueInfo('inputs_embeds', OnnxDataType.FLOAT, ['batch_size', 'sequence_length', hiddenSize])],
    },
    metadataProps: [...(model.metadataProps ?? []), { key: 'kvpack_derived', value: `embed_tokens:${embeddings}` }],
  };
}

function replaceLookupWithInput(
  model: OnnxModel,
  lookup: OnnxNode,
  shapes: OnnxNode[],
  embeddings: string,
  hiddenSize: number,
): OnnxModel {
  const graph = model.graph;
  const extraInitializers: OnnxTensor[] = [];
  const nodes: OnnxNode[] = [];
  for (const node of graph.node) {
    if (node === lookup) {
      continue;
    }
    if (shapes.includes(node)) {
      nodes.push(...shapeOfEmbeddings(node, extraInitializers));
      continue;
    }
    nodes.push({ ...node, input: node.input.map((name) => (name === embeddings ? 'inputs_embeds' : name)) });
  }
  const stillUsed = new Set(nodes.flatMap((node) => node.input));
  const outputs = graph.output.map((output) => (output.name === embeddings ? { ...output, name: 'inputs_embeds' } : output));
  const inputs = graph.input.filter((input) => input.name !== 'input_ids');
  inputs.unshift(valueInfo('inputs_embeds', OnnxDataType.FLOAT, ['batch_size', 'sequence_length', hiddenSize]));
  return {
    ...model,
    graph: {
      ...graph,
      node: nodes,
      input: inputs,
      output: outputs,
      initializer: [...graph.initializer.filter((t) => stillUsed.has(t.name)), ...extraInitializers],
      valueInfo: (graph.valueInfo ?? []).filter((info) => info.name !== embeddings),
    },
    metadataProps: [...(model.metadataProps ?? []), { key: 'kvpack_derived', value: `inputs_embeds:${embeddings}` }],
  };
}

/**
 * Replaces `Shape(input_ids)` (optionally with start/end attributes) by the same slice of
 * `Shape(inputs_embeds)`, whose first two dimensions are `[batch, seq]`.
 */
function shapeOfEmbeddings(node: OnnxNode, extraInitializers: OnnxTensor[]): OnnxNode[] {
  const attr = (name: string) => node.attribute?.find((a) => a.name === name);
  const normalize = (value: number) => Math.min(Math.max(value < 0 ? value + 2 : value, 0), 2);
  const start = normalize(toNumber(attr('start')?.i));
  const endAttribute = attr('end');
  const end = endAttribute ? normalize(toNumber(endAttribute.i)) : 2;
  const full = `${node.output[0]}__kvpack_full_shape`;
  const constant = (suffix: string, value: number): string => {
    const name = `${node.output[0]}__kvpack_${suffix}`;
    const data = BigInt64Array.from([BigInt(value)]);
    extraInitializers.push({ name, dims: [1], dataType: OnnxDataType.INT64, rawData: new Uint8Array(data.buffer) });
    return name;
  };
  return [
    { name: `${node.name ?? node.output[0]}__kvpack_shape`, opType: 'Shape', domain: '', input: ['inputs_embeds'], output: [full], attribute: [] },
    {
      name: `${node.name ?? node.output[0]}__kvpack_slice`,
      opType: 'Slice',
      domain: '',
      input: [full, constant('start', start), constant('end', end)],
      output: node.output,
      attribute: [],
    },
  ];
}
