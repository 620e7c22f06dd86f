/**
 * Packet codec speed: encode and decode throughput per storage dtype for a stories260K-sized packet
 * (5 layers, 4 KV heads, head_dim 8, 48 tokens) and a packet of a ~100M-parameter Llama shape
 * (12 layers, 4 KV heads, head_dim 64, 256 tokens). Throughput counts the float32 KV bytes in memory
 * (the same amount of work for every dtype); decoding includes both sha256 checks.
 * Run: npx tsx bench/packet-codec.bench.ts
 */
import os from 'node:os';
import { Bench } from 'tinybench';
import { SeededRandom } from '../common/random.js';
import { KvCache, type KvLayout } from '../inference/kv-cache.js';
import { decodePacket, encodePacket } from '../packets/codec.js';
import { createPacket, PACKET_DTYPES, type Packet } from '../packets/packet.js';

interface PacketShape {
  name: string;
  layout: KvLayout;
  tokens: number;
}

const SHAPES: PacketShape[] = [
  { name: 'stories260K 48 tokens', layout: { numLayers: 5, numKvHeads: 4, headDim: 8 }, tokens: 48 },
  { name: 'llama-100m 256 tokens', layout: { numLayers: 12, numKvHeads: 4, headDim: 64 }, tokens: 256 },
];

function randomPacket({ layout, tokens }: PacketShape): Packet {
  const random = new SeededRandom(1);
  const block = () => Float32Array.from({ length: layout.numKvHeads * tokens * layout.headDim }, () => 2 * random.nextNormal());
  const layers = Array.from({ length: layout.numLayers }, () => 0);
  const kv = new KvCache(layout, tokens, layers.map(block), layers.map(block));
  const description = {
    modelFingerprint: '0'.repeat(64),
    tokenizerFingerprint: '1'.repeat(64),
    adapterId: 'none',
    adapterFingerprint: '',
    variant: 'naive' as const,
    chunkId: 'bench',
    kind: 'full' as const,
    tokenIds: Int32Array.from({ length: tokens }, (_, i) => i % 512),
    prefixLength: 0,
    suffixLength: 0,
    basePosition: 0,
    createdAt: new Date().toISOString(),
  };
  return createPacket(description, kv);
}

async function main(): Promise<void> {
  console.log(`Machine: ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} cores, Node ${process.version}`);
  const bench = new Bench({ time: 1000, warmup: true });
  const kvBytes = new Map<string, number>();
  const fileBytes = new Map<string, number>();

  for (const shape of SHAPES) {
    const packet = randomPacket(shape);
    for (const dtype of PACKET_DTYPES) {
      const file = encodePacket(packet.header, packet.kv, dtype);
      for (const operation of ['encode', 'decode'] as const) {
        const name = `${shape.name} ${dtype} ${operation}`;
        kvBytes.set(name, packet.kv.byteLength);
        fileBytes.set(name, file.byteLength);
        bench.add(name, operation === 'encode' ? () => void encodePacket(packet.header, packet.kv, dtype) : () => void decodePacket(file, 'bench'));
      }
    }
  }
  await bench.run();

  console.log('\n| task | file bytes | median ms | MB/s (float32 KV, median) |');
  console.log('|---|---:|---:|---:|');
  for (const task of bench.tasks) {
    const result = task.result;
    if (!result || !('latency' in result)) continue;
    const median = result.latency.p50;
    const rate = (kvBytes.get(task.name) ?? 0) / 1e6 / (median / 1000);
    console.log(`| ${task.name} | ${fileBytes.get(task.name)} | ${median.toFixed(3)} | ${rate.toFixed(0)} |`);
  }
}

await main();
