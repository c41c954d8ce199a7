// The report page's script (inlined by html.cpp after Chart.js). It reads the data block, draws
// the timeline and the robustness charts, then checks its own work: each canvas must hold drawn
// pixels; the counts go to the body's data-charts-drawn and data-charts-expected. All text from the
// inputs reaches the page through textContent or canvas fillText, never as HTML.
(function () {
  'use strict';

  const data = JSON.parse(document.getElementById('report-data').textContent);

  // Controller states (control's state machine); unknown states are drawn grey.
  const STATE_COLORS = {
    'serving': 'rgba(46, 160, 67, 0.10)',
    'alarm': 'rgba(207, 34, 46, 0.16)',
    'hardening': 'rgba(191, 135, 0, 0.16)',
    'gating': 'rgba(130, 80, 223, 0.14)',
    'promoting': 'rgba(9, 105, 218, 0.14)',
    'watching': 'rgba(27, 124, 131, 0.14)',
    'stable': 'rgba(46, 160, 67, 0.20)',
    'rolled-back': 'rgba(188, 76, 0, 0.20)',
    'failed': 'rgba(110, 118, 129, 0.28)'
  };
  const UNKNOWN_STATE = 'rgba(110, 118, 129, 0.12)';
  const MARKER_COLORS = {'alarm': '#cf222e', 'guard.promoted': '#1a7f37', 'guard.rolled-back': '#bc4c00'};
  const PALETTE = ['#0969da', '#cf222e', '#1a7f37', '#8250df', '#bf8700', '#1b7c83', '#e16f24', '#57606a'];
  const DASHES = [[], [7, 4], [2, 3], [10, 3, 2, 3]];

  Chart.defaults.animation = false;
  Chart.defaults.font.size = 12;
  // Legend entries as short lines that keep their dataset's dash pattern (the default legend
  // takes the dash from a point, which has none).
  const legendLabels = Chart.defaults.plugins.legend.labels;
  const defaultGenerateLabels = legendLabels.generateLabels;
  legendLabels.usePointStyle = true;
  legendLabels.pointStyle = 'line';
  legendLabels.pointStyleWidth = 28;
  legendLabels.generateLabels = (chart) => defaultGenerateLabels(chart).map((item) =>
    Object.assign(item, {lineDash: chart.data.datasets[item.datasetIndex].borderDash || []}));

  function stateColor(state) {
    return Object.prototype.hasOwnProperty.call(STATE_COLORS, state) ? STATE_COLORS[state] : UNKNOWN_STATE;
  }

  // x in data units to a pixel, clipped to the chart area.
  function xPixel(chart, x) {
    const area = chart.chartArea;
    return Math.min(area.right, Math.max(area.left, chart.scales.x.getPixelForValue(x)));
  }

  // State bands and phase separators behind the lines; event markers over them. Debian ships no
  // Chart.js annotation plugin, so this small one draws them.
  const timelinePlugin = {
    id: 'bulwarkTimeline',
    beforeDatasetsDraw(chart) {
      const tl = data.timeline, area = chart.chartArea, ctx = chart.ctx;
      ctx.save();
      for (const band of tl.bands) {
        const x0 = xPixel(chart, band.from), x1 = xPixel(chart, band.to);
        ctx.fillStyle = stateColor(band.state);
        ctx.fillRect(x0, area.top, Math.max(1, x1 - x0), area.bottom - area.top);
      }
      ctx.fillStyle = '#57606a';
      ctx.strokeStyle = 'rgba(87, 96, 106, 0.5)';
      ctx.setLineDash([2, 3]);
      ctx.textBaseline = 'top';
      for (const phase of tl.phases) {
        const x = xPixel(chart, phase.from);
        if (phase.from > 0) {
          ctx.beginPath();
          ctx.moveTo(x, area.top);
          ctx.lineTo(x, area.bottom);
          ctx.stroke();
        }
        ctx.fillText(phase.phase, x + 4, area.top + 4, Math.max(10, xPixel(chart, phase.to) - x - 8));
      }
      ctx.restore();
    },
    afterDatasetsDraw(chart) {
      const area = chart.chartArea, ctx = chart.ctx;
      let lastLabelX = -Infinity;
      ctx.save();
      ctx.lineWidth = 1.5;
      ctx.textBaseline = 'bottom';
      for (const m of data.timeline.markers) {
        const x = xPixel(chart, m.t);
        ctx.strokeStyle = ctx.fillStyle = MARKER_COLORS[m.kind] || '#57606a';
        ctx.setLineDash(m.kind === 'alarm' ? [5, 3] : []);
        ctx.beginPath();
        ctx.moveTo(x, area.top);
        ctx.lineTo(x, area.bottom);
        ctx.stroke();
        if (x - lastLabelX > 90) {  // labels of close markers would overlap: the first one speaks
          ctx.fillText(m.label, x + 3, area.bottom - 4);
          lastLabelX = x;
        }
      }
      ctx.restore();
    }
  };

  function series(values, t) {
    return values.map((y, i) => ({x: t[i], y: y}));
  }

  function timelineChart(canvas) {
    const tl = data.timeline;
    const versions = tl.versions;
    const line = (label, values, color, extra) => Object.assign({
      label: label, data: series(values, tl.t), borderColor: color, backgroundColor: color,
      borderWidth: 1.5, pointRadius: 0, spanGaps: false, yAxisID: 'y'
    }, extra || {});
    return new Chart(canvas, {
      type: 'line',
      data: {datasets: [
        line('accuracy, benign', tl.benign_accuracy, '#1a7f37'),
        line('accuracy, attacked', tl.attacked_accuracy, '#cf222e'),
        line('detector flag rate', tl.flag_rate, '#bf8700', {borderDash: [4, 3]}),
        line('model version', tl.version_index, '#0969da', {stepped: 'before', yAxisID: 'version', borderWidth: 2})
      ]},
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, parsing: true,
        interaction: {mode: 'index', intersect: false},
        scales: {
          x: {type: 'linear', min: 0, max: tl.x_max, title: {display: true, text: 'seconds since traffic start'}},
          y: {min: 0, max: 1, title: {display: true, text: 'accuracy / flag rate'}},
          version: {
            type: 'linear', position: 'right', min: -0.5, max: Math.max(0.5, versions.length - 0.5),
            grid: {drawOnChartArea: false}, title: {display: true, text: 'model version'},
            afterBuildTicks: (axis) => { axis.ticks = versions.map((v, i) => ({value: i})); },
            ticks: {callback: (value) => (versions[value] === undefined ? '' : versions[value])}
          }
        },
        plugins: {
          tooltip: {callbacks: {label: (item) => item.dataset.yAxisID === 'version'
            ? 'model version ' + versions[item.parsed.y]
            : item.dataset.label + ': ' + (100 * item.parsed.y).toFixed(1) + '%'}}
        }
      },
      plugins: [timelinePlugin]
    });
  }

  function robustnessChart(canvas, group) {
    const attacks = [], labels = [];
    for (const s of group.series) {
      if (!s.worst_case && attacks.indexOf(s.attack) < 0) attacks.push(s.attack);
      if (labels.indexOf(s.label) < 0) labels.push(s.label);
    }
    const datasets = group.series.map((s) => {
      // The worst case usually lies on one attack's curve: a wide translucent line stays visible there.
      const color = s.worst_case ? 'rgba(31, 35, 40, 0.35)' : PALETTE[attacks.indexOf(s.attack) % PALETTE.length];
      return {
        label: s.label + ' \u00b7 ' + s.attack, data: s.points.map((p) => ({x: p[0], y: p[1]})),
        borderColor: color, backgroundColor: color, borderWidth: s.worst_case ? 6 : 1.8, pointRadius: s.worst_case ? 0 : 3,
        borderDash: DASHES[labels.indexOf(s.label) % DASHES.length]
      };
    });
    return new Chart(canvas, {
      type: 'line',
      data: {datasets: datasets},
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: {
          x: {type: 'linear', min: 0, title: {display: true, text: 'eps (' + group.norm + ')'}},
          y: {min: 0, max: 1, title: {display: true, text: 'robust accuracy'}}
        },
        plugins: {tooltip: {callbacks: {label: (item) => item.dataset.label + ' at eps ' + item.parsed.x + ': ' +
          (100 * item.parsed.y).toFixed(1) + '%'}}}
      }
    });
  }

  // The state bands and markers have no Chart.js legend entries; list the ones on the page.
  function timelineLegend(element) {
    const seen = [];
    for (const band of data.timeline.bands) {
      if (seen.indexOf(band.state) < 0) seen.push(band.state);
    }
    for (const state of seen) {
      const item = document.createElement('span'), swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = stateColor(state);
      item.appendChild(swatch);
      item.appendChild(document.createTextNode('state: ' + state));
      element.appendChild(item);
    }
    const kinds = [];
    for (const m of data.timeline.markers) {
      if (kinds.indexOf(m.kind) < 0) kinds.push(m.kind);
    }
    for (const kind of kinds) {
      const item = document.createElement('span'), mark = document.createElement('span');
      mark.className = 'line';
      mark.style.borderColor = MARKER_COLORS[kind] || '#57606a';
      item.appendChild(mark);
      item.appendChild(document.createTextNode(kind));
      element.appendChild(item);
    }
  }

  // Drawn = enough opaque pixels in more than a couple of colours (axes alone are one grey).
  function hasInk(canvas) {
    if (!canvas.width || !canvas.height) return false;
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let opaque = 0;
    const colors = new Set();
    for (let i = 0; i < pixels.length; i += 4) {
      if (pixels[i + 3] === 0) continue;
      opaque += 1;
      if (colors.size < 64) colors.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
    }
    return opaque >= 0.001 * canvas.width * canvas.height && colors.size >= 3;
  }

  function drawAll() {
    const canvases = Array.from(document.querySelectorAll('canvas[data-chart]'));
    let drawn = 0;
    for (const canvas of canvases) {
      try {
        if (canvas.dataset.chart === 'timeline') {
          timelineChart(canvas);
          timelineLegend(document.getElementById('timeline-legend'));
        } else {
          robustnessChart(canvas, data.robustness[Number(canvas.dataset.group)]);
        }
        if (hasInk(canvas)) drawn += 1;
        else console.error('chart ' + canvas.id + ' drew nothing');
      } catch (e) {
        console.error('chart ' + canvas.id + ' failed: ' + e);
      }
    }
    document.body.dataset.chartsExpected = String(canvases.length);
    document.body.dataset.chartsDrawn = String(drawn);
  }

  drawAll();
})();
