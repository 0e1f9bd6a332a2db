import PocketSAMCore
import SwiftUI

/// The photo, aspect-fit, with the mask overlay, the points (green include, red exclude) and the box; touches are
/// mapped from view points to the photo's pixels (the original frame) before they reach the model.
struct SegmentCanvas: View {
    @ObservedObject var model: DemoModel
    @State private var touchStart: Date?
    @State private var dragRect: CGRect?

    var body: some View {
        GeometryReader { geo in
            if let photo = model.photo {
                let fit = Self.fitRect(image: CGSize(width: photo.width, height: photo.height), in: geo.size)
                ZStack(alignment: .topLeading) {
                    Image(decorative: photo, scale: 1).resizable().frame(width: fit.width, height: fit.height)
                        .offset(x: fit.minX, y: fit.minY)
                    if let overlay = model.overlay {
                        Image(decorative: overlay, scale: 1).resizable().interpolation(.none)
                            .frame(width: fit.width, height: fit.height).offset(x: fit.minX, y: fit.minY)
                    }
                    marks(fit: fit, photo: photo)
                    if let r = dragRect {
                        Rectangle().stroke(.yellow, style: StrokeStyle(lineWidth: 2, dash: [6]))
                            .frame(width: r.width, height: r.height).offset(x: r.minX, y: r.minY)
                    }
                }
                .contentShape(Rectangle())
                .gesture(touches(fit: fit, photo: photo))
            } else {
                ContentUnavailableView("No photo", systemImage: "photo", description: Text("Pick a photo to segment."))
                    .frame(width: geo.size.width, height: geo.size.height)
            }
        }
    }

    /// Where an image of `image` size is drawn, aspect-fit and centred, in a view of `size`.
    static func fitRect(image: CGSize, in size: CGSize) -> CGRect {
        let scale = min(size.width / image.width, size.height / image.height)
        let w = image.width * scale, h = image.height * scale
        return CGRect(x: (size.width - w) / 2, y: (size.height - h) / 2, width: w, height: h)
    }

    /// A view point as photo pixels, clamped to the photo's edges ([0, W] x [0, H], as the core expects).
    private func pixel(_ p: CGPoint, fit: CGRect, photo: CGImage) -> (Double, Double) {
        let x = (p.x - fit.minX) / fit.width * CGFloat(photo.width)
        let y = (p.y - fit.minY) / fit.height * CGFloat(photo.height)
        return (Double(min(max(x, 0), CGFloat(photo.width))), Double(min(max(y, 0), CGFloat(photo.height))))
    }

    private func view(_ x: Double, _ y: Double, fit: CGRect, photo: CGImage) -> CGPoint {
        CGPoint(x: fit.minX + CGFloat(x) / CGFloat(photo.width) * fit.width,
                y: fit.minY + CGFloat(y) / CGFloat(photo.height) * fit.height)
    }

    private func touches(fit: CGRect, photo: CGImage) -> some Gesture {
        DragGesture(minimumDistance: 0)
            .onChanged { v in
                if touchStart == nil { touchStart = Date() }
                let d = hypot(v.translation.width, v.translation.height)
                dragRect = d < 10 ? nil : CGRect(x: min(v.startLocation.x, v.location.x), y: min(v.startLocation.y, v.location.y),
                                                 width: abs(v.translation.width), height: abs(v.translation.height))
            }
            .onEnded { v in
                let seconds = touchStart.map { Date().timeIntervalSince($0) } ?? 0
                touchStart = nil
                dragRect = nil
                guard fit.contains(v.startLocation) else { return }  // on the letterbox, not the photo
                let (x0, y0) = pixel(v.startLocation, fit: fit, photo: photo)
                switch Touch.classify(distance: Double(hypot(v.translation.width, v.translation.height)), seconds: seconds) {
                case .tap: model.include(x: x0, y: y0)
                case .longPress: model.exclude(x: x0, y: y0)
                case .drag:
                    let (x1, y1) = pixel(v.location, fit: fit, photo: photo)
                    model.box(x0: x0, y0: y0, x1: x1, y1: y1)
                }
            }
    }

    @ViewBuilder private func marks(fit: CGRect, photo: CGImage) -> some View {
        if let i = model.interaction {
            ForEach(Array(i.points.enumerated()), id: \.offset) { _, p in
                let c = view(p.x, p.y, fit: fit, photo: photo)
                Circle().fill(p.include ? Color.green : Color.red).overlay(Circle().stroke(.white, lineWidth: 2))
                    .frame(width: 16, height: 16).offset(x: c.x - 8, y: c.y - 8)
            }
            if let b = i.box {
                let a = view(min(b.x0, b.x1), min(b.y0, b.y1), fit: fit, photo: photo)
                let z = view(max(b.x0, b.x1), max(b.y0, b.y1), fit: fit, photo: photo)
                Rectangle().stroke(.yellow, lineWidth: 2).frame(width: z.x - a.x, height: z.y - a.y).offset(x: a.x, y: a.y)
            }
        }
    }
}
