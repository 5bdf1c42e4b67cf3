// The landing page's share panel: a "Copy" button for the embed code. Without JavaScript (or
// without the Clipboard API) the code stays selectable in its read-only text box.
(() => {
  "use strict";
  const button = document.getElementById("copy-embed");
  const status = document.getElementById("copy-status");
  if (!button || !navigator.clipboard) return;
  const source = document.getElementById(button.dataset.copy);
  button.hidden = false;
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(source.value);
      status.textContent = "Copied.";
    } catch (error) {
      source.select(); // e.g. clipboard permission denied: leave it selected for Ctrl-C
      status.textContent = "Press Ctrl-C (⌘-C) to copy.";
    }
  });
})();
