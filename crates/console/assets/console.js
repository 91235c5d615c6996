// A run's page follows its journal: the server sends an event when a line
// is added (server-sent events, /runs/ID/events), and the page reloads to
// show it. Nothing else runs here; every page works without it.
(function () {
  var timeline = document.getElementById("timeline");
  if (!timeline || !window.EventSource) return;
  var run = timeline.getAttribute("data-run");
  var seen = timeline.getAttribute("data-lines");
  var source = new EventSource("/runs/" + encodeURIComponent(run) + "/events?after=" + encodeURIComponent(seen));
  var pending = null;
  source.addEventListener("line", function () {
    if (pending) return;
    // Several lines at once reload once.
    pending = setTimeout(function () { source.close(); window.location.reload(); }, 300);
  });
})();
