/**
 * The search web page served at `/`: one self-contained HTML file (no external scripts, fonts or styles).
 * A text box, an image drop zone / file picker, a result grid (thumbnail, score, path) and a detail view.
 * Images are fetched with the API key (when the server has one) and shown from blob URLs.
 */
export const SEARCH_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>internvl search</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #1d2330; background: #f5f6f8; }
  body { margin: 0; }
  header { background: #1d2330; color: #fff; padding: 14px 24px; display: flex; gap: 16px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  header small { color: #aab3c5; }
  main { padding: 16px 24px; }
  form { display: flex; gap: 8px; flex-wrap: wrap; align-items: center; }
  input[type=search] { flex: 1 1 320px; font-size: 16px; padding: 8px 10px; border: 1px solid #c4cad6; border-radius: 6px; }
  input.small { width: 220px; padding: 8px; border: 1px solid #c4cad6; border-radius: 6px; }
  button { font-size: 15px; padding: 8px 14px; border: 0; border-radius: 6px; background: #3a63d8; color: #fff; cursor: pointer; }
  #drop { margin-top: 10px; border: 2px dashed #aab3c5; border-radius: 8px; padding: 12px; color: #5a6375; text-align: center; }
  #drop.over { border-color: #3a63d8; background: #e8eefc; }
  #status { margin: 10px 0; color: #5a6375; min-height: 1.2em; }
  #status.error { color: #b3261e; }
  #grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 12px; }
  .card { background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.12); overflow: hidden; cursor: pointer; }
  .card img { width: 100%; height: 160px; object-fit: cover; background: #e3e6ec; display: block; }
  .card .meta { padding: 6px 8px; font-size: 12px; }
  .card .score { font-weight: 600; font-size: 14px; }
  .card .path { color: #5a6375; word-break: break-all; }
  #detail { position: fixed; inset: 0; background: rgba(16,20,28,.82); display: none; align-items: center; justify-content: center; }
  #detail.open { display: flex; }
  #detail .box { background: #fff; border-radius: 10px; max-width: 90vw; max-height: 90vh; overflow: auto; padding: 16px; }
  #detail img { max-width: 80vw; max-height: 70vh; display: block; margin: 0 auto 10px; }
  #detail dl { display: grid; grid-template-columns: auto 1fr; gap: 4px 12px; font-size: 13px; margin: 0; }
  #detail dt { color: #5a6375; }
  #detail dd { margin: 0; word-break: break-all; }
</style>
</head>
<body>
<header><h1>internvl search</h1><small id="info"></small></header>
<main>
  <form id="form">
    <input id="q" type="search" name="q" placeholder="Describe an image (any language)…" autocomplete="off">
    <input id="where" class="small" name="where" placeholder="filter, e.g. width > 300">
    <input id="k" class="small" style="width:70px" type="number" min="1" max="1000" value="24" title="results">
    <button id="go" type="submit">Search</button>
    <input id="key" class="small" type="password" placeholder="API key" hidden>
  </form>
  <div id="drop">Drop an image here or <label style="color:#3a63d8;cursor:pointer;text-decoration:underline">choose one<input id="file" type="file" accept="image/*" hidden></label> to search by image</div>
  <div id="status"></div>
  <div id="grid"></div>
</main>
<div id="detail"><div class="box"><img id="big" alt=""><dl id="facts"></dl></div></div>
<script>
const $ = (id) => document.getElementById(id);
const state = { key: localStorage.getItem('internvl-key') || '' };
const headers = (extra) => Object.assign(state.key ? { authorization: 'Bearer ' + state.key } : {}, extra || {});
function status(text, error) { $('status').textContent = text; $('status').className = error ? 'error' : ''; }
async function call(path, body) {
  const response = await fetch(path, body === undefined ? { headers: headers() } : {
    method: 'POST', headers: headers({ 'content-type': 'application/json' }), body: JSON.stringify(body) });
  if (response.status === 401) { $('key').hidden = false; throw new Error('this server needs an API key: enter it and search again'); }
  const json = await response.json();
  if (!response.ok) throw new Error(json.error ? json.error.message : response.statusText);
  return json;
}
async function blobUrl(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) return '';
  return URL.createObjectURL(await response.blob());
}
async function search(body) {
  const where = $('where').value.trim();
  Object.assign(body, { k: Number($('k').value) || 24 }, where ? { where } : {});
  status('searching…');
  $('grid').replaceChildren();
  try {
    const result = await call('/v1/search', body);
    status(result.data.length + ' results in ' + result.took_ms + ' ms');
    for (const hit of result.data) $('grid').append(card(hit));
  } catch (error) { status(error.message, true); }
}
function card(hit) {
  const el = document.createElement('div');
  el.className = 'card';
  el.dataset.id = hit.id;
  const img = document.createElement('img');
  img.alt = hit.image;
  blobUrl(hit.thumbnail_url).then((url) => { img.src = url; });
  const meta = document.createElement('div');
  meta.className = 'meta';
  const score = document.createElement('div');
  score.className = 'score';
  score.textContent = '#' + hit.rank + '  ' + hit.score.toFixed(4);
  const where = document.createElement('div');
  where.className = 'path';
  where.textContent = hit.image;
  meta.append(score, where);
  el.append(img, meta);
  el.addEventListener('click', () => detail(hit));
  return el;
}
async function detail(hit) {
  const facts = [['rank', hit.rank], ['score', hit.score.toFixed(6)], ['image', hit.image], ['size', hit.width + ' × ' + hit.height], ['id', hit.id]];
  if (hit.caption) facts.push(['caption', hit.caption]);
  if (hit.metadata) facts.push(['metadata', JSON.stringify(hit.metadata)]);
  $('facts').replaceChildren(...facts.flatMap(([k, v]) => { const dt = document.createElement('dt'); dt.textContent = k; const dd = document.createElement('dd'); dd.textContent = String(v); return [dt, dd]; }));
  $('big').src = '';
  $('detail').className = 'open';
  $('big').src = await blobUrl(hit.image_url);
}
function searchFile(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => search({ image: reader.result });
  reader.readAsDataURL(file);
}
$('form').addEventListener('submit', (event) => {
  event.preventDefault();
  if ($('key').value) { state.key = $('key').value; localStorage.setItem('internvl-key', state.key); }
  const q = $('q').value.trim();
  if (q) search({ query: q });
});
$('file').addEventListener('change', () => searchFile($('file').files[0]));
$('drop').addEventListener('dragover', (event) => { event.preventDefault(); $('drop').classList.add('over'); });
$('drop').addEventListener('dragleave', () => $('drop').classList.remove('over'));
$('drop').addEventListener('drop', (event) => { event.preventDefault(); $('drop').classList.remove('over'); searchFile(event.dataTransfer.files[0]); });
$('detail').addEventListener('click', () => { $('detail').className = ''; });
document.addEventListener('keydown', (event) => { if (event.key === 'Escape') $('detail').className = ''; });
call('/v1/search').then((info) => { $('info').textContent = info.rows + ' images · ' + info.table + ' (' + info.mode + ', ' + info.weights + ')'; }, () => {});
</script>
</body>
</html>
`;
