/** The language model of any supported folder: a bare causal LM, or the LLM inside an InternVL-Chat checkpoint. */
import { Checkpoint } from '../core/safetensors.js';
import type { SessionOptions } from '../core/runtime.js';
import { detectArchitecture, readConfig } from '../models/config.js';
import { CausalLM, parseLlmConfig } from '../models/llm.js';
import { InternVLChatModel } from '../models/internvl_chat.js';
import { ModelLoadError } from '../core/errors.js';
import { resolveModelDir, type ResolveModelOptions } from '../core/hub.js';

/** Loads a model folder or Hugging Face repo id, as `--model`. */
export async function loadLanguageModel(
  idOrPath: string,
  options: { session?: SessionOptions; hub?: ResolveModelOptions } = {},
): Promise<CausalLM> {
  const dir = await resolveModelDir(idOrPath, options.hub);
  const config = readConfig(dir);
  const architecture = detectArchitecture(config);
  if (architecture === 'CausalLM')
    return CausalLM.load(Checkpoint.open(dir), parseLlmConfig(config), { session: options.session });
  if (architecture === 'InternVLChatModel' || architecture === 'InternVLForConditionalGeneration') {
    return (await InternVLChatModel.load(dir, { session: options.session })).language;
  }
  throw new ModelLoadError(`${dir}: ${architecture} has no language model to generate with`);
}
