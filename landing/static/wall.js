// The live wall: follows /api/wall/events (SSE) and shows the posts, newest first, pinned on top.
// Every piece of text goes in with textContent: nothing a poster wrote is ever parsed as HTML.
// EventSource reconnects by itself and sends Last-Event-ID, so a dropped connection misses nothing.
(() => {
  'use strict';

  const state = { posts: new Map(), lastEventId: null, connected: false, events: 0 };
  window.launchkitWall = state;  // read by tests and by other scripts on the page

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function safeUrl(url) {
    // The server only sends http(s) links; checked again here so a mistake there cannot become a
    // javascript: link.
    try {
      const parsed = new URL(url);
      return parsed.protocol === 'https:' || parsed.protocol === 'http:' ? parsed : null;
    } catch (error) {
      return null;
    }
  }

  function renderPost(post) {
    const item = el('li', `wall-post wall-post-${post.kind} wall-post-${post.state}`);
    item.dataset.postId = post.id;
    item.setAttribute('dir', 'auto');
    const meta = el('p', 'wall-meta');
    meta.append(el('span', 'wall-kind-label', post.kind === 'question' ? 'Question' : ''));
    if (post.name) meta.append(el('span', 'wall-name', post.name));
    if (post.outlet) meta.append(el('span', 'wall-outlet', post.outlet));
    if (post.source !== 'page') meta.append(el('span', 'wall-source', `via ${post.source}`));
    const link = post.url && safeUrl(post.url);
    if (link) {
      const anchor = el('a', 'wall-link', link.hostname);
      anchor.href = link.href;
      anchor.rel = 'noopener noreferrer nofollow ugc';
      anchor.target = '_blank';
      meta.append(anchor);
    }
    item.append(meta, el('p', 'wall-text', post.text));
    return item;
  }

  function order(a, b) {
    const pinned = (b.state === 'pinned') - (a.state === 'pinned');
    return pinned || b.created_at - a.created_at;
  }

  function render(root) {
    const list = root.querySelector('[data-wall-posts]');
    const limit = Number(root.dataset.wallLimit) || 50;
    const posts = [...state.posts.values()].sort(order).slice(0, limit);
    list.replaceChildren(...posts.map(renderPost));
  }

  function setStatus(root, text) {
    const status = root.querySelector('[data-wall-status]');
    if (status) status.textContent = text;
  }

  function parse(event) {
    state.lastEventId = event.lastEventId || state.lastEventId;
    state.events += 1;
    return JSON.parse(event.data);
  }

  function follow(root) {
    const source = new EventSource(root.dataset.wallEvents || '/api/wall/events');
    let pending = false;
    const update = () => {  // one render per frame, however many events arrive together
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; render(root); });
    };
    source.addEventListener('snapshot', (event) => {
      const data = parse(event);
      state.posts = new Map(data.posts.map((post) => [post.id, post]));
      update();
    });
    source.addEventListener('post', (event) => {
      const post = parse(event);
      state.posts.set(post.id, post);
      update();
    });
    source.addEventListener('remove', (event) => {
      state.posts.delete(parse(event).id);
      update();
    });
    source.addEventListener('open', () => {
      state.connected = true;
      setStatus(root, 'Live');
    });
    source.addEventListener('error', () => {
      state.connected = false;
      setStatus(root, 'Reconnecting…');
    });
    return source;
  }

  function bindForm(form) {
    const status = form.querySelector('[data-wall-form-status]');
    form.hidden = false;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const body = { text: String(data.get('text') || ''), kind: String(data.get('kind') || 'comment') };
      for (const name of ['name', 'outlet']) {
        if (data.get(name)) body[name] = String(data.get(name));
      }
      const button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      try {
        const response = await fetch('/api/wall/posts', {
          method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
        });
        const answer = await response.json().catch(() => ({}));
        if (response.status === 202) {
          form.querySelector('textarea').value = '';
          status.textContent = 'Thank you: it appears here once a moderator has approved it.';
        } else if (response.status === 429) {
          status.textContent = `Please wait ${response.headers.get('Retry-After') || 'a few'} s before posting again.`;
        } else {
          status.textContent = answer.error || 'That did not work, please try again.';
        }
      } catch (error) {
        status.textContent = 'The wall is not reachable right now, please try again.';
      } finally {
        button.disabled = false;
      }
    });
  }

  function start() {
    for (const root of document.querySelectorAll('[data-wall]')) {
      setStatus(root, 'Connecting…');
      follow(root);
      const form = root.querySelector('[data-wall-form]');
      if (form) bindForm(form);
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
