import PhotosUI
import PocketSAMCore
import SwiftUI
import UniformTypeIdentifiers

/// The segmentation screen: pick a bundle and a photo, tap (include), long-press (exclude) or drag (box), see the
/// mask with its predicted IoU, choose among the three masks, undo, clear, save the mask as PNG.
struct ContentView: View {
    @StateObject private var model = DemoModel()
    @State private var photoItem: PhotosPickerItem?
    @State private var importing = false
    @State private var exporting = false
    @State private var png: PNGDocument?

    var body: some View {
        NavigationStack {
            VStack(spacing: 8) {
                banner
                SegmentCanvas(model: model)
                    .frame(maxWidth: .infinity, maxHeight: .infinity)
                masks
                controls
            }
            .padding(.horizontal)
            .navigationTitle(model.bundle?.manifest.name ?? "PocketSAM")
            .navigationBarTitleDisplayMode(.inline)
            .toolbar { toolbar }
            .onChange(of: photoItem) { _, item in load(item) }
            .fileImporter(isPresented: $importing, allowedContentTypes: [.folder]) { result in
                switch result {
                case let .success(url): model.importBundle(url)
                case let .failure(error): model.message = DemoModel.describe(error)
                }
            }
            .fileExporter(isPresented: $exporting, document: png, contentType: .png, defaultFilename: "mask.png") { result in
                if case let .failure(error) = result { model.message = DemoModel.describe(error) }
            }
            .overlay { if let busy = model.busy { BusyView(text: busy) } }
        }
    }

    @ToolbarContentBuilder private var toolbar: some ToolbarContent {
        ToolbarItem(placement: .topBarLeading) {
            Menu {
                ForEach(model.bundles, id: \.self) { url in
                    Button(url.lastPathComponent) { model.openBundle(url) }
                }
                Divider()
                Button("Import a bundle folder…") { importing = true }
                Button("Refresh") { model.refreshBundles() }
            } label: { Label("Bundle", systemImage: "shippingbox") }
        }
        ToolbarItem(placement: .topBarTrailing) {
            PhotosPicker(selection: $photoItem, matching: .images) { Label("Photo", systemImage: "photo") }
        }
        ToolbarItem(placement: .topBarTrailing) {
            Menu {
                Picker("Compute units", selection: Binding(get: { model.computeUnits }, set: { model.setComputeUnits($0) })) {
                    ForEach(ComputeUnits.allCases) { Text($0.label).tag($0) }
                }
            } label: { Label("Compute units", systemImage: "cpu") }
        }
        ToolbarItem(placement: .topBarTrailing) {
            NavigationLink { BenchmarkView(model: model) } label: { Label("Benchmark", systemImage: "speedometer") }
        }
    }

    @ViewBuilder private var banner: some View {
        if let message = model.message {
            Note(text: message, color: .red) { model.message = nil }
        } else if let notice = model.notice {
            Note(text: notice, color: .orange) { model.notice = nil }
        } else if let b = model.bundle {
            Text("\(b.manifest.format) \(b.manifest.encoder.precision)/\(b.manifest.decoder.precision) on "
                 + "\(b.computeUnits.rawValue)\(b.manifest.isSynthetic ? " · \(b.manifest.checkpointDescription): masks are not meaningful" : "")")
                .font(.caption).foregroundStyle(.secondary)
        } else {
            Text(model.bundles.isEmpty ? "Copy a CoreML bundle into the app's folder (Files app), or import one."
                 : "Open a bundle from the menu.")
                .font(.caption).foregroundStyle(.secondary)
        }
    }

    /// The three multimask outputs with their predicted IoU; the shown one selected.
    @ViewBuilder private var masks: some View {
        if let p = model.prediction {
            Picker("Mask", selection: Binding(get: { model.shownMask ?? p.bestIndex }, set: { model.choose($0) })) {
                ForEach(0..<p.count, id: \.self) { i in
                    Text("\(i + 1): IoU \(String(format: "%.3f", p.scores[i]))\(i == p.bestIndex ? " ★" : "")").tag(i)
                }
            }
            .pickerStyle(.segmented)
        } else {
            Text("Tap: include · long-press: exclude · drag: box").font(.caption).foregroundStyle(.secondary)
        }
    }

    private var controls: some View {
        HStack {
            Button { model.undo() } label: { Label("Undo", systemImage: "arrow.uturn.backward") }
                .disabled(!model.canUndo)
            Spacer()
            Button(role: .destructive) { model.clear() } label: { Label("Clear", systemImage: "xmark.circle") }
                .disabled(model.interaction?.isEmpty ?? true)
            Spacer()
            Button {
                if let data = model.maskPNG() {
                    png = PNGDocument(data: data)
                    exporting = true
                }
            } label: { Label("Save PNG", systemImage: "square.and.arrow.down") }
                .disabled(model.prediction == nil)
        }
        .padding(.bottom, 8)
    }

    private func load(_ item: PhotosPickerItem?) {
        guard let item else { return }
        Task {
            do {
                guard let data = try await item.loadTransferable(type: Data.self) else {
                    model.message = "this photo cannot be loaded (no image data)"
                    return
                }
                model.loadPhoto(data)
            } catch {
                model.message = "this photo cannot be loaded (\(error.localizedDescription))"
            }
        }
    }
}

/// A one-line message with a close button.
struct Note: View {
    let text: String
    let color: Color
    let dismiss: () -> Void

    var body: some View {
        HStack(alignment: .top) {
            Image(systemName: "exclamationmark.triangle.fill").foregroundStyle(color)
            Text(text).font(.callout).frame(maxWidth: .infinity, alignment: .leading)
            Button(action: dismiss) { Image(systemName: "xmark") }
        }
        .padding(8)
        .background(color.opacity(0.12), in: RoundedRectangle(cornerRadius: 8))
    }
}

/// A progress indicator over the screen while the encoder or a compilation runs.
struct BusyView: View {
    let text: String
    var body: some View {
        VStack(spacing: 12) {
            ProgressView()
            Text(text).font(.callout).multilineTextAlignment(.center)
        }
        .padding(20)
        .background(.regularMaterial, in: RoundedRectangle(cornerRadius: 12))
    }
}

/// The mask PNG for the file exporter.
struct PNGDocument: FileDocument {
    static var readableContentTypes: [UTType] { [.png] }
    let data: Data

    init(data: Data) { self.data = data }

    init(configuration: ReadConfiguration) throws {
        guard let d = configuration.file.regularFileContents else { throw CocoaError(.fileReadCorruptFile) }
        data = d
    }

    func fileWrapper(configuration: WriteConfiguration) throws -> FileWrapper { FileWrapper(regularFileWithContents: data) }
}
