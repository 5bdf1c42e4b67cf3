// Wall moderation and Q&A for operators: polls the queue, sends one action per click.
// Signed-in operators carry the console's cookie; actions are JSON POSTs (a cross-site form cannot
// send them). All text goes in with textContent.
(() => {
  'use strict';

  const POLL_MS = 2000;
  const queue = document.getElementById('queue');
  const questions = document.getElementById('questions');
  const errorLine = document.getElementById('queue-error');

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  async function act(id, action) {
    errorLine.textContent = '';
    const response = await fetch(`/api/ops/wall/${encodeURIComponent(id)}/${action}`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}', credentials: 'same-origin',
    });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}));
      errorLine.textContent = answer.error || `${action} failed (HTTP ${response.status})`;
    }
    await refresh();
  }

  function item(post, actions) {
    const node = el('li', `wall-post wall-post-${post.kind} wall-post-${post.state}`);
    node.dataset.postId = post.id;
    node.setAttribute('dir', 'auto');
    const meta = el('p', 'wall-meta');
    meta.append(el('span', 'wall-kind-label', post.kind === 'question' ? 'Question' : 'Comment'),
      el('span', 'wall-name', post.name || 'anonymous'), el('span', 'wall-outlet', post.outlet || ''),
      el('span', 'wall-source', `${post.source} · ${post.state} · ${post.author}`));
    const buttons = el('p', 'moderation-actions');
    for (const action of actions) {
      if (action === 'answer' && post.kind !== 'question') continue;
      const button = el('button', '', action);
      button.type = 'button';
      button.dataset.action = action;
      button.addEventListener('click', () => act(post.id, action));
      buttons.append(button);
    }
    node.append(meta, el('p', 'wall-text', post.text), buttons);
    return node;
  }

  async function refresh() {
    try {
      const response = await fetch('/api/ops/wall/queue', { credentials: 'same-origin', cache: 'no-store' });
      if (response.status === 401) {
        window.location.href = '/ops';
        return;
      }
      const data = await response.json();
      document.getElementById('queue-mode').textContent = data.mode;
      document.getElementById('queue-count').textContent = String(data.pending.length);
      document.getElementById('queue-clients').textContent = String(data.sse_clients);
      queue.replaceChildren(...data.pending.map((post) => item(post, ['approve', 'pin', 'reject', 'ban'])));
      questions.replaceChildren(...data.questions.slice().reverse()
        .map((post) => item(post, ['answer', 'pin', 'approve', 'reject'])));
    } catch (error) {
      errorLine.textContent = 'The queue could not be loaded; retrying.';
    }
  }

  refresh();
  setInterval(refresh, POLL_MS);
})();
