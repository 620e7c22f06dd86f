import { valueInfo } from './graph-builder.js';
import { OnnxDataType, type OnnxModel, type OnnxNode, type OnnxTensor } from './proto.js';

/**
 * Adds a `num_logits_to_keep` input (0 keeps every position, k keeps the last k) to an export
 * whose `logits` come straight from a MatMul of the hidden states `[batch, seq, hidden]` with a
 * 2-D weight. A prefill then skips the output head for every position but the last, which on a
 * large vocabulary is a sizable share of the work. Returns undefined when the graph does not have
 * that form; the caller then slices the full logits.
 */
export function addLogitsToKeep(model: OnnxModel): OnnxModel | undefined {
  const graph = model.graph;
  const head = graph.node.find((node) => node.output.includes('logits'));
  const logitsRank = graph.output.find((output) => output.name === 'logits')?.type?.tensorType?.shape?.dim.length;
  const weight = head ? graph.initializer.find((t) => t.name === head.input[1]) : undefined;
  if (!head || head.opType !== 'MatMul' || logitsRank !== 3 || !weight || weight.dims.length !== 2) {
    return undefined;
  }
  const prefix = 'kvpack_logits_to_keep';
  const constant = (name: string, value: number): OnnxTensor => {
    const data = BigInt64Array.from([BigInt(value)]);
    return { name: `${prefix}_${name}`, dims: [1], dataType: OnnxDataType.INT64, rawData: new Uint8Array(data.buffer) };
  };
  const end = constant('end', Number.MAX_SAFE_INTEGER);
  // [1] serves both as the 1-D shape of the slice start and as the sequence axis.
  const one = constant('one', 1);
  const scalarZero: OnnxTensor = { ...constant('scalar_zero', 0), dims: [] };
  const node = (opType: string, inputs: string[], output: string): OnnxNode => ({
    name: `${prefix}_${opType}`,
    opType,
    domain: '',
    input: inputs,
    output: [output],
    attribute: [],
  });
  const hidden = head.input[0];
  const sliced = `${prefix}_hidden`;
  const sliceNodes = [
    node('Equal', ['num_logits_to_keep', scalarZero.name], `${prefix}_is_zero`),
    node('Neg', ['num_logits_to_keep'], `${prefix}_negated`),
    node('Where', [`${prefix}_is_zero`, scalarZero.name, `${prefix}_negated`], `${prefix}_start_scalar`),
    node('Reshape', [`${prefix}_start_scalar`, one.name], `${prefix}_start`),
    node('Slice', [hidden, `${prefix}_start`, end.name, one.name], sliced),
  ];
  const headIndex = graph.node.indexOf(head);
  const nodes = [...graph.node.slice(0, headIndex), ...sliceNodes, { ...head, input: [sliced, head.input[1]] }, ...graph.node.slice(headIndex + 1)];
  return {
    ...model,
    graph: {
      ...graph,
      node: nodes,
      input: [...graph.input, valueInfo('num_logits_to_keep', OnnxDataType.INT64, [])],
      initializer: [...graph.initializer, end, one, scalarZero],
    },
  };
}
