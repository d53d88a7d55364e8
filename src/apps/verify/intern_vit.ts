/**
 * Runner for InternViT fixtures (`intern_vit_rms`, `intern_vit_ln`): config architecture InternVisionModel.
 * Every `in.pixel_values<_suffix>` input is run; its goldens are `out.<suffix.>last_hidden_state`,
 * `…pooler_output` and `…hidden_states.N` (the latter only for the unsuffixed input, as the fixtures hold them).
 */
import type { FloatTensor } from '../../core/tensor.js';
import { Checkpoint } from '../../core/safetensors.js';
import { detectArchitecture } from '../../models/registry.js';
import { InternVisionModel, parseInternVisionConfig } from '../../models/intern_vit.js';
import type { ComparedTensor, SkippedTensor } from './compare.js';
import type { Fixture } from './fixture.js';
import type { FixtureRunner } from './registry.js';

export const internVitRunner: FixtureRunner = {
  name: 'intern_vit',
  matches(fixture) {
    return (
      fixture.config !== null &&
      fixture.has('in.pixel_values') &&
      detectArchitecture(fixture.config) === 'InternVisionModel'
    );
  },
  async run(fixture, options) {
    const config = parseInternVisionConfig(fixture.config!);
    const checkpoint = await Checkpoint.open(fixture.dir);
    const wantsHidden = fixture.goldenNames().some((n) => /^out\.hidden_states\.\d+$/.test(n));
    const model = await InternVisionModel.load(checkpoint, config, {
      graph: { allHiddenStates: wantsHidden },
      session: { threads: options.threads },
      configureGraph: options.graphs?.vision,
    });
    const compared: ComparedTensor[] = [];
    const skipped: SkippedTensor[] = [];
    try {
      for (const inputName of fixture.names('in.pixel_values')) {
        const suffix = inputName.slice('in.pixel_values'.length).replace(/^_/, '');
        const prefix = suffix ? `out.${suffix}.` : 'out.';
        const input = fixture.tensor(inputName);
        if (input.shape.length !== 4) {
          skipped.push(
            ...goldensOf(fixture, prefix).map((name) => ({ name, reason: `${inputName} is not [B,3,H,W]` })),
          );
          continue;
        }
        const hidden = wantsHidden && suffix === '';
        const output = await model.forward(
          Float32Array.from(input.data),
          input.shape as [number, number, number, number],
          { hiddenStates: hidden },
        );
        const computed = new Map<string, FloatTensor>([
          [`${prefix}last_hidden_state`, output.lastHiddenState],
          [`${prefix}pooler_output`, output.poolerOutput],
        ]);
        output.hiddenStates?.forEach((t, i) => computed.set(`${prefix}hidden_states.${i}`, t));
        for (const name of goldensOf(fixture, prefix)) {
          const tensor = computed.get(name);
          if (tensor) compared.push(fixture.compare(name, { data: tensor.data, shape: tensor.dims }));
          else skipped.push({ name, reason: 'InternVisionModel does not produce this output' });
        }
      }
    } finally {
      await model.release();
    }
    return { compared, skipped };
  },
};

/** Goldens directly under `prefix` (`out.last_hidden_state`, not `out.alt.last_hidden_state` for prefix `out.`). */
function goldensOf(fixture: Fixture, prefix: string): string[] {
  return fixture
    .goldenNames()
    .filter(
      (n) =>
        n.startsWith(prefix) && /^(last_hidden_state|pooler_output|hidden_states\.\d+)$/.test(n.slice(prefix.length)),
    );
}
