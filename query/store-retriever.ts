import type { ChunkStore } from '../ingest/store.js';
import type { ChunkRetriever, RetrievedChunk } from '../query/types.js';

/**
 * The query pipeline's view of a store: top-k search, then each hit's tokens and summary tokens
 * from the catalog. A chunk deleted between the search and the catalog read is left out.
 */
export class StoreRetriever implements ChunkRetriever {
  constructor(private readonly store: ChunkStore) {}

  async search(question: string, k: number): Promise<RetrievedChunk[]> {
    const hits = await this.store.search(question, k);
    const chunks: RetrievedChunk[] = [];
    for (const hit of hits) {
      const chunk = this.store.catalog.getChunk(hit.chunkId);
      const documentId = hit.documentIds[0];
      if (!chunk || documentId === undefined) continue;
      chunks.push({
        chunkId: hit.chunkId,
        documentId,
        title: this.store.catalog.getDocument(documentId)?.title ?? hit.title,
        text: hit.text,
        span: hit.span,
        score: hit.score,
        tokens: chunk.tokens,
        summaryTokens: chunk.summaryTokens.length > 0 ? chunk.summaryTokens : undefined,
      });
    }
    return chunks;
  }
}
