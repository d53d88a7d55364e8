/**
 * Runner for InternVL-C/G end-to-end folders (`clip_e2e`): the user's classification and retrieval through the
 * task code the CLI uses (tokenizer → prompts → text tower; photo → Pillow-exact transform → image tower;
 * template ensembling; logits, probabilities, top-1; retrieval scores and recall), both modes.
 */
import { compareValues, EXACT_BOUND } from './compare.js';
import type { ComparedTensor } from './compare.js';
import { baseName } from './fixture.js';
import type { FixtureRunner } from './registry.js';
import { ModelLoadError } from '../../core/errors.js';
import { argmaxRows, retrievalRecall } from '../eval/metrics.js';
import { matrix, transpose } from '../../core/matrix.js';
import { architectureOf } from '../../models/registry.js';
import { loadImage } from '../../processing/image.js';
import { preprocessForClip } from '../../processing/tiling.js';
import { encodeClipTexts, preCaption } from '../../processing/tokenizers/clip_text.js';
import {
  buildZeroShotClassifier,
  classifyEmbeddings,
  encodeImages,
  encodeTexts,
  fillTemplate,
  loadClipPipeline,
} from '../../tasks/clip.js';
import { retrievalScores } from '../../core/matrix.js';

interface ClipMeta {
  classify: { images: string[]; labels: string[]; templates: string[] };
  retrieval: { captions: string[]; text_image_index: number[]; modes: Record<string, Record<string, number>> };
}

export const clipE2eRunner: FixtureRunner = {
  name: 'internvl_clip_e2e',
  matches(fixture) {
    return (
      fixture.config !== null &&
      fixture.goldenDir !== fixture.dir &&
      architectureOf(fixture.config).capabilities.includes('clip')
    );
  },
  async run(fixture, options) {
    const meta = fixture.meta as unknown as ClipMeta;
    if (!meta.classify?.images || !meta.retrieval?.captions)
      throw new ModelLoadError(`${fixture.goldenDir}/meta.json: no classify/retrieval section`);
    const pipeline = await loadClipPipeline(fixture.dir, {
      session: { threads: options.threads },
      configureVisionGraph: options.graphs?.vision,
      configureQllamaGraph: options.graphs?.qllama,
    });
    const compared: ComparedTensor[] = [];
    const check = (
      name: string,
      data: ArrayLike<number>,
      shape: number[],
      bound = undefined as typeof EXACT_BOUND | undefined,
    ) => {
      if (fixture.has(name)) compared.push(fixture.compare(name, { data, shape }, bound));
    };
    try {
      const images = await Promise.all(
        meta.classify.images.map((p) => loadImage(fixture.goldenPath('images', baseName(p)))),
      );
      const S = pipeline.model.config.imageSize;
      const pixels = (transform: 'classification' | 'retrieval') => {
        const out = new Float32Array(images.length * 3 * S * S);
        images.forEach((image, i) => out.set(preprocessForClip(image, transform, S), i * 3 * S * S));
        return out;
      };
      check('in.cls.pixel_values', pixels('classification'), [images.length, 3, S, S]);
      check('in.ret.pixel_values', pixels('retrieval'), [images.length, 3, S, S]);

      const { labels, templates } = meta.classify;
      const prompts = labels.flatMap((label) => templates.map((t) => fillTemplate(t, label)));
      const promptIds = encodeClipTexts(pipeline.tokenizer, prompts).ids;
      check('in.cls.input_ids', promptIds.flat(), [promptIds.length, promptIds[0].length]);
      const texts = meta.retrieval.captions.map((c) => preCaption(c));
      const textIds = encodeClipTexts(pipeline.tokenizer, texts).ids;
      check('in.ret.input_ids', textIds.flat(), [textIds.length, textIds[0].length]);

      const D = pipeline.model.config.clipEmbedDim;
      const promptEmbeds = await encodeTexts(pipeline, prompts);
      check('out.text_embeds', promptEmbeds.data, [prompts.length, D]);
      const textEmbeds = await encodeTexts(pipeline, texts);
      check('out.ret.text_embeds', textEmbeds.data, [texts.length, D]);
      const classifier = await buildZeroShotClassifier(pipeline, labels, templates);

      for (const mode of ['C', 'G'] as const) {
        const imageEmbeds = await encodeImages(pipeline, images, { mode, transform: 'classification' });
        check(`out.${mode}.image_embeds`, imageEmbeds.data, [images.length, D]);
        check(`out.${mode}.classifier`, transpose(classifier).data, [D, labels.length]);
        const { logits, probs } = classifyEmbeddings(imageEmbeds, classifier);
        check(`out.${mode}.logits`, logits.data, [images.length, labels.length]);
        check(`out.${mode}.probs`, probs.data, [images.length, labels.length]);
        check(`out.${mode}.top1`, argmaxRows(logits), [images.length], EXACT_BOUND);

        const retrievalEmbeds = await encodeImages(pipeline, images, { mode, transform: 'retrieval' });
        check(`out.${mode}.ret.image_embeds`, retrievalEmbeds.data, [images.length, D]);
        const scores = retrievalScores(textEmbeds, retrievalEmbeds);
        check(`out.${mode}.ret.scores`, scores.data, [texts.length, images.length]);
        check(`out.${mode}.ret.logits_per_image`, pipeline.model.similarity(retrievalEmbeds, textEmbeds).data, [
          images.length,
          texts.length,
        ]);
        const expected = meta.retrieval.modes[mode];
        if (expected) {
          const recall = retrievalRecall(
            matrix(scores.data, texts.length, images.length),
            meta.retrieval.text_image_index,
            [1, 5],
          );
          const keys = Object.keys(expected).sort();
          compared.push(
            compareValues(
              `meta.retrieval.${mode} (${keys.length} recalls)`,
              keys.map((k) => recall[k]),
              keys.map((k) => expected[k]),
            ),
          );
        }
      }
    } finally {
      await pipeline.model.release();
    }
    return compared;
  },
};
